"""What every command shares: settings, the store, and errors printed instead of raised."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from fineloop.config import Settings, get_settings
from fineloop.errors import BatchRejected, FineloopError
from fineloop.store import Store

if TYPE_CHECKING:
    from fineloop.sdk import Client

console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML settings file (else FINELOOP_CONFIG, env, defaults)."),
]
# The options of the commands that are clients of a running server.
DEFAULT_URL = "http://127.0.0.1:8000"
ServerUrl = Annotated[str, typer.Option(envvar="FINELOOP_URL", help="The fineloop server.")]
ApiKey = Annotated[
    str | None, typer.Option(envvar="FINELOOP_API_KEY", help="API key, when the server needs one.")
]


@contextmanager
def server_client(url: str, api_key: str | None) -> Iterator[Client]:
    """A client of the server, its errors shown as one clear line and exit code 1."""
    from rich.markup import escape

    from fineloop.sdk import Client
    from fineloop.sdk import FineloopError as ServerError

    try:
        with Client(url, api_key=api_key) as client:
            yield client
    except ServerError as error:
        err_console.print(f"[red]error:[/red] {escape(error.message)}")
        raise typer.Exit(1) from error


def load_settings(config: Path | None) -> Settings:
    try:
        return get_settings(config)
    except (ValueError, OSError) as error:
        err_console.print(f"[red]bad settings:[/red] {error}")
        raise typer.Exit(2) from error


@contextmanager
def opened_store(config: Path | None) -> Iterator[Store]:
    """The store, with domain errors shown as one clear line and exit code 1."""
    store = Store.open(load_settings(config))
    try:
        yield store
    except BatchRejected as rejected:
        err_console.print(f"[red]error:[/red] {rejected.message}")
        for row in rejected.errors[:20]:
            where = f"line {row.line}" if row.line is not None else f"row {row.row}"
            err_console.print(f"  {where}: {row.field}: {row.message}")
        raise typer.Exit(1) from rejected
    except FineloopError as error:
        err_console.print(f"[red]error:[/red] {error.message}")
        raise typer.Exit(1) from error
    finally:
        store.close()
