"""`python -m fineloop.jobs.run JOB_ID`: the child process a worker runs one job in.

A crash, an out-of-memory kill or a cancel of training then ends this process, never the
server. The worker has already claimed the job; settings come from the FINELOOP_* variables
it passes. SIGTERM from the worker unwinds the job: a cancel is recorded here, any other
ending (the worker stopping) is left to the worker, which queues the job again or fails it.
Should the worker die, a watchdog ends this process too, and the job's heartbeat goes stale.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from types import FrameType

from fineloop.config import get_settings
from fineloop.jobs import store as jobs
from fineloop.jobs.runner import Terminated, execute
from fineloop.jobs.sink import StoreSink
from fineloop.store import Store

ORPHAN_EXIT = 3
_received: list[int] = []


def _on_term(signum: int, _frame: FrameType | None) -> None:
    _received.append(signum)
    raise Terminated(f"stopped by {signal.Signals(signum).name}", leave=True)


def _watch_parent(parent: int) -> None:
    """Exit at once when the worker that started us is gone: the job is its to hand back
    (the heartbeat goes stale), and a run nobody watches must not go on writing."""
    while True:
        time.sleep(0.2)
        if os.getppid() != parent:
            os._exit(ORPHAN_EXIT)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m fineloop.jobs.run JOB_ID", file=sys.stderr)
        return 2
    job_id = int(args[0])
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    settings = get_settings()
    store = Store.open(settings, migrate_schema=False)
    try:
        state = execute(store, settings, job_id, StoreSink(store, job_id))
    finally:
        store.close()
    print(f"job {job_id} {state}", flush=True)
    if state == jobs.RUNNING and _received:  # left to the worker: say which signal
        return 128 + _received[0]
    return 0 if state in (jobs.SUCCEEDED, jobs.CANCELLED) else 1


if __name__ == "__main__":
    sys.exit(main())
