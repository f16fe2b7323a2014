"""`fineloop worker`: run queued jobs from the configured store, without a server.

Start as many as you like, on this machine or others that reach the same PostgreSQL store
(FINELOOP_DATABASE_URL) and artifact root: each claims jobs with row locks, so no job runs
twice. SIGTERM or Ctrl-C stops it gracefully: running jobs are stopped and queued again
(while their attempts allow) for another worker.
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from fineloop.cli.common import ConfigOption, console, err_console, load_settings
from fineloop.extras import SERVER_MODULES, require
from fineloop.store import Store


def worker(
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Jobs run at the same time.")] = 1,
    poll: Annotated[
        float, typer.Option(min=0.05, max=600, help="Seconds between looks at the queue.")
    ] = 1.0,
    kinds: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated job kinds to take (e.g. train,evaluate); default: every "
            "kind installed here."
        ),
    ] = None,
    grace: Annotated[
        float,
        typer.Option(min=0, max=3600, help="Seconds a stopped job gets to end before SIGKILL."),
    ] = 10.0,
    config: ConfigOption = None,
) -> None:
    """Claim and run queued jobs until stopped (SIGTERM or Ctrl-C)."""
    require("server", SERVER_MODULES, "`fineloop worker`")
    from fineloop.jobs.runner import known_kinds
    from fineloop.jobs.triggers import TriggerLoop
    from fineloop.jobs.worker import Worker

    settings = load_settings(config)
    known = known_kinds()
    wanted = None if kinds is None else [k.strip() for k in kinds.split(",") if k.strip()]
    unknown = sorted(set(wanted or []) - set(known))
    if wanted is not None and (unknown or not wanted):
        err_console.print(
            f"[red]unknown job kind(s): {', '.join(unknown) or '(none given)'}[/red]; "
            f"installed here: {', '.join(known)}"
        )
        raise typer.Exit(2)
    store = Store.open(settings)
    running = Worker(
        store,
        settings,
        concurrency=concurrency,
        kinds=wanted,
        poll_seconds=poll,
        grace_seconds=grace,
    )
    triggers = TriggerLoop(store, on_job=running.wake)  # any number of processes may run one
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        console.print(f"{signal.Signals(signum).name}: stopping (running jobs are handed back)")
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal), signal.signal(signal.SIGINT, on_signal)
    try:
        for job_id in running.start():
            console.print(f"job {job_id} was left running by a dead process: handed back")
        triggers.start()
        console.print(
            f"worker {running.name} ready: {concurrency} slot(s), kinds "
            f"{', '.join(running.kinds)}; store "
            f"{store.engine.url.render_as_string(hide_password=True)}",
            highlight=False,
        )
        while not stop.wait(0.5):
            pass
        triggers.stop()
        running.stop(timeout=grace + 30)
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
        store.close()
    console.print(f"worker {running.name} stopped")
