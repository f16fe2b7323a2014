"""`fineloop keys create|list|revoke`: API keys, stored hashed."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from fineloop import auth
from fineloop.cli.common import ConfigOption, console, opened_store

app = typer.Typer(help="Manage API keys (scopes: ingest, admin).", no_args_is_help=True)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A label for the key, e.g. the app using it.")],
    scope: Annotated[
        str, typer.Option(help="ingest (log interactions and feedback) or admin.")
    ] = "ingest",
    config: ConfigOption = None,
) -> None:
    """Create a key and print it once; only its hash is stored."""
    if scope not in auth.SCOPES:
        console.print(f"[red]error:[/red] scope must be one of {', '.join(auth.SCOPES)}")
        raise typer.Exit(2)
    with opened_store(config) as store, store.write() as session:
        created = auth.create_key(session, name, scope)
    console.print(f"key {created.id} ({scope}): [bold]{created.key}[/bold]")
    console.print("Keep it now: it cannot be shown again.")


@app.command("list")
def list_all(config: ConfigOption = None) -> None:
    with opened_store(config) as store, store.read() as session:
        keys = auth.list_keys(session)
    table = Table("id", "name", "prefix", "scope", "revoked", "created")
    for key in keys:
        table.add_row(
            str(key.id),
            key.name,
            key.prefix,
            key.scope,
            str(key.revoked),
            f"{key.created_at:%Y-%m-%d}",
        )
    console.print(table)


@app.command("revoke")
def revoke(key_id: int, config: ConfigOption = None) -> None:
    with opened_store(config) as store, store.write() as session:
        auth.revoke_key(session, key_id)
    console.print(f"revoked key {key_id}")
