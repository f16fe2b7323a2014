"""`fineloop index status|build PROJECT`: the search indexes a running server holds.

Indexes live in the server's memory, so these commands ask the server (FINELOOP_URL), not
the store. `build --wait` polls until no index of the project is building; it exits 1 when
one failed.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

from fineloop.cli.common import DEFAULT_URL, console, err_console
from fineloop.cli.common import ApiKey as Key
from fineloop.cli.common import ServerUrl as Url

app = typer.Typer(
    help="Search indexes on the server: their build progress, and starting a build.",
    no_args_is_help=True,
)
Project = Annotated[str, typer.Argument(help="Project name.")]
BUSY = {"queued", "loading_model", "indexing"}


def _print(status: dict[str, Any]) -> None:
    serving = status.get("serving") or "none yet"
    console.print(f"project {status['project']}: champion {status['champion']}, serving {serving}")
    table = Table("version", "state", "items", "progress", "seconds", "error")
    for v in status["versions"]:
        total = v.get("items_total")
        items = f"{v.get('items_indexed', 0)}/{total}" if total is not None else "-"
        seconds = v.get("seconds")
        table.add_row(
            v["version"],
            v["state"],
            items,
            f"{100 * v.get('progress', 0.0):.0f}%",
            "-" if seconds is None else f"{seconds:.1f}",
            v.get("error") or "",
        )
    console.print(table)


def _call(url: str, api_key: str | None, action: str, project: str, **kw: Any) -> dict[str, Any]:
    from fineloop.sdk import Client, FineloopError

    try:
        with Client(url, api_key=api_key) as client:
            answer: dict[str, Any] = getattr(client, action)(project, **kw)
            return answer
    except FineloopError as error:
        err_console.print(f"[red]error:[/red] {error.message}")
        raise typer.Exit(1) from error


@app.command("status")
def status(project: Project, url: Url = DEFAULT_URL, api_key: Key = None) -> None:
    """Each index of the project on the server: state, items embedded, time spent."""
    _print(_call(url, api_key, "index_status", project))


@app.command("build")
def build(
    project: Project,
    version: Annotated[
        str | None, typer.Option(help="Version number or alias (default: the champion).")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow the build until it is ready.")] = False,
    url: Url = DEFAULT_URL,
    api_key: Key = None,
) -> None:
    """Start building an index in the background (searches answer 503 until it is ready)."""
    found = _call(url, api_key, "build_index", project, version=version)
    while wait and any(v["state"] in BUSY for v in found["versions"]):
        time.sleep(1.0)
        found = _call(url, api_key, "index_status", project)
    _print(found)
    if any(v["state"] == "failed" for v in found["versions"]):
        raise typer.Exit(1)
