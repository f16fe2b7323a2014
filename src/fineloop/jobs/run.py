"""`python -m fineloop.jobs.run JOB_ID`: the child process a worker runs one job in.

A crash, an out-of-memory kill or a cancel of training then ends this process, never the
server. The worker has already claimed the job; settings come from the FINELOOP_* variables
it passes. SIGTERM (a cancel, or the server stopping) unwinds the job so it records why and
clears its scratch folder; should the worker die, a watchdog ends this process too.
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


def _on_term(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(f"stopped by {signal.Signals(signum).name}")


def _watch_parent(parent: int) -> None:
    """Exit when the worker that started us is gone (its restart fails the job)."""
    while True:
        time.sleep(1.0)
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
    return 0 if state in (jobs.SUCCEEDED, jobs.CANCELLED) else 1


if __name__ == "__main__":
    sys.exit(main())
