"""`fineloop serve`: the API (and, later, the dashboard and worker) in one process."""

from __future__ import annotations

from typing import Annotated

import typer

from fineloop import auth
from fineloop.cli.common import ConfigOption, console, load_settings
from fineloop.store import Store

LOOPBACK = "127.0.0.1"


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = LOOPBACK,
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    demo: Annotated[
        bool, typer.Option(help="Create the 'demo' project with a small catalog if missing.")
    ] = True,
    config: ConfigOption = None,
) -> None:
    """Run the fineloop server on the configured store (SQLite under ./.fineloop by default)."""
    import uvicorn

    from fineloop.api import create_app
    from fineloop.api.app import register_configured_keys
    from fineloop.demo import ensure_demo_project
    from fineloop.jobs.worker import Worker

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
        f"API docs: http://{host}:{port}/docs"
    )
    app = create_app(settings, store)
    worker = Worker(store, settings)  # runs training jobs, each in a child process
    app.state.worker = worker
    for job_id in worker.start():
        console.print(f"job {job_id} was left running by a stopped process: marked failed")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        worker.stop()
