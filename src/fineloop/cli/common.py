"""What every command shares: settings, the store, and errors printed instead of raised."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fineloop.config import Settings, get_settings
from fineloop.errors import BatchRejected, FineloopError
from fineloop.store import Store

console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML settings file (else FINELOOP_CONFIG, env, defaults)."),
]


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
