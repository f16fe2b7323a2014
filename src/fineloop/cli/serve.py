"""`fineloop serve`: the API (and, later, the dashboard and worker) in one process."""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from fineloop import auth
from fineloop.cli.common import ConfigOption, console, load_settings
from fineloop.extras import SERVER_MODULES, require
from fineloop.store import Store

LOOPBACK = "127.0.0.1"


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = LOOPBACK,
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    demo: Annotated[
        bool, typer.Option(help="Create the 'demo' project with a small catalog if missing.")
    ] = True,
    run_worker: Annotated[
        bool,
        typer.Option(
            "--worker/--no-worker",
            help="Run queued jobs in this process; --no-worker leaves them to `fineloop worker`.",
        ),
    ] = True,
    config: ConfigOption = None,
) -> None:
    """Run the fineloop server on the configured store (SQLite under ./.fineloop by default)."""
    require("server", SERVER_MODULES, "`fineloop serve`")
    import uvicorn

    from fineloop.api import create_app
    from fineloop.api.app import register_configured_keys
    from fineloop.demo import ensure_demo_project
    from fineloop.jobs.triggers import TriggerLoop
    from fineloop.jobs.worker import Worker
    from fineloop.serving.journal import journal_of

    settings = load_settings(config)
    store = Store.open(settings)
    register_configured_keys(store, settings)
    with store.read() as session:
        keys = auth.active_key_count(session)
        auth_on = auth.any_key_exists(session)
    if auth_on and keys == 0:
        console.print(
            "[yellow]Every API key is revoked: all routes but /healthz refuse requests.[/yellow]"
            " Create one with `fineloop keys create NAME --scope admin`."
        )
    elif keys == 0 and host != LOOPBACK:
        console.print(
            f"[yellow]No API keys are configured, so the server binds to {LOOPBACK} only "
            f"(not {host}).[/yellow] Create one with `fineloop keys create NAME --scope admin` "
            "or set FINELOOP_API_KEYS to serve other machines."
        )
        host = LOOPBACK
    elif keys == 0:
        console.print(f"No API keys configured: open access, bound to {LOOPBACK} only.")
    else:
        console.print(f"{keys} API key(s) active: every route but /healthz needs one.")
    if demo:
        ensure_demo_project(store)
    console.print(
        f"store: {store.engine.url.render_as_string(hide_password=True)}\n"
        f"dashboard: http://{host}:{port}/\n"
        f"API docs: http://{host}:{port}/docs"
    )
    app = create_app(settings, store)
    journal = journal_of(store)
    if journal is not None:  # interactions a killed server had journaled reach the store
        journal.start()
    worker = Worker(store, settings)  # runs queued jobs; never started with --no-worker
    app.state.worker = worker
    for job_id in worker.start() if run_worker else []:
        console.print(f"job {job_id} was left running by a stopped process: handed back")
    triggers = TriggerLoop(store, on_job=worker.wake)  # auto-training, webhooks
    app.state.triggers = triggers
    triggers.start()
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    )
    app.state.stopping = lambda: server.should_exit  # open event streams end on shutdown

    def on_term(signum: int, _frame: object) -> None:
        # uvicorn catches SIGTERM while it runs and raises it again once it has shut down,
        # which would end the process before the worker hands its running job back.
        if not server.started:
            raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        server.run()
    finally:
        triggers.stop()
        worker.stop()
        signal.signal(signal.SIGTERM, previous)
    if not server.started:
        raise typer.Exit(3)
