"""`fineloop models list|show|compare|promote|rollback`: the registry of a project;
`fineloop models prepare`: convert a base model that ships in a form that cannot load."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from fineloop.cli.common import ConfigOption, console, err_console, load_settings, opened_store
from fineloop.errors import FineloopError
from fineloop.registry import manage
from fineloop.registry.versions import CHAMPION
from fineloop.store.projects import get_project

app = typer.Typer(
    help="List, compare, promote and roll back model versions; prepare base models.",
    no_args_is_help=True,
)

Project = Annotated[str, typer.Argument(help="Project name.")]
Ref = Annotated[str, typer.Argument(help="Version: v3, 3, or an alias such as champion.")]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", help="Why; kept in the alias history.")
]


def _primary(version: dict[str, Any]) -> str:
    metrics = version["metrics"]
    primary = metrics.get("primary")
    value = (metrics.get("candidate") or {}).get(primary) if primary else None
    return f"{primary} {value:.4f}" if value is not None else "-"


def _gate(version: dict[str, Any]) -> str:
    gate = version["gate"]
    if "passed" not in gate:
        return "-"
    return "passed" if gate["passed"] else "failed"


@app.command("list")
def list_versions(project: Project, config: ConfigOption = None) -> None:
    """Every version with its aliases, primary test metric and gate outcome."""
    with opened_store(config) as store, store.read() as session:
        rows = manage.versions_public(session, get_project(session, project))
    table = Table("version", "aliases", "test metric", "gate", "parent", "created")
    numbers = {row["id"]: row["version"] for row in rows}
    for row in rows:
        table.add_row(
            row["version"],
            ", ".join(sorted(row["aliases"])),
            _primary(row),
            _gate(row),
            numbers.get(row["parent_id"], "-"),
            row["created_at"][:16].replace("T", " "),
        )
    console.print(table)


@app.command("show")
def show(project: Project, ref: Ref, config: ConfigOption = None) -> None:
    """One version as JSON: artifact, lineage, config, metrics, gate."""
    with opened_store(config) as store, store.read() as session:
        found = manage.version_detail(session, get_project(session, project), ref)
    console.print_json(data=found)


@app.command("compare")
def compare(
    project: Project,
    a: Annotated[str, typer.Argument(help="First version.")],
    b: Annotated[str, typer.Argument(help="Second version.")],
    config: ConfigOption = None,
) -> None:
    """Metrics of two versions side by side, with b - a."""
    with opened_store(config) as store, store.read() as session:
        found = manage.compare(session, get_project(session, project), a, b)
    va, vb = found["a"]["version"], found["b"]["version"]
    table = Table("metric", va, vb, f"{vb} - {va}")
    for name, row in found["metrics"].items():
        cells = [row["a"], row["b"], row["delta"]]
        shown = [
            f"{v:+.4f}" if i == 2 and v is not None else f"{v:.4f}" if v is not None else "-"
            for i, v in enumerate(cells)
        ]
        table.add_row(name + (" *" if name == found["primary"] else ""), *shown)
    console.print(table)
    if found["same_split"]:
        console.print(f"both measured on one split by {found['evaluated_by']}'s training run")
    else:
        console.print("[yellow]no run measured both: each number is from its own split[/yellow]")


@app.command("promote")
def promote(
    project: Project,
    ref: Ref,
    force: Annotated[
        bool, typer.Option("--force", help="Promote even a version that failed the gate.")
    ] = False,
    reason: ReasonOption = None,
    config: ConfigOption = None,
) -> None:
    """Make a version the champion (atomic; recorded with the reason)."""
    with opened_store(config) as store, store.write() as session:
        found = get_project(session, project)
        moved = manage.promote(session, found, ref, force=force, reason=reason, actor="cli")
    if not moved["changed"]:
        console.print(f"{moved['version']} is already the champion")
        return
    console.print(
        f"champion: {moved['previous']} -> [bold]{moved['version']}[/bold] ({moved['reason']})"
    )


@app.command("rollback")
def rollback(
    project: Project,
    alias: Annotated[str, typer.Option("--alias", help="Alias to move back.")] = CHAMPION,
    reason: ReasonOption = None,
    config: ConfigOption = None,
) -> None:
    """Point an alias back at the version it held before its last move."""
    with opened_store(config) as store, store.write() as session:
        found = get_project(session, project)
        moved = manage.roll_back(session, found, alias, reason=reason, actor="cli")
    console.print(f"{alias}: {moved['previous']} -> [bold]{moved['version']}[/bold]")


@app.command("prepare")
def prepare(
    name: Annotated[str, typer.Argument(help="Model to prepare: smollm2-135m-instruct.")],
    force: Annotated[
        bool, typer.Option("--force", help="Convert again even if it is already prepared.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Convert a base model once into the models root (SmolLM2 ships only as GGUF)."""
    from fineloop.tasks.generation.prepare import prepare_model

    settings = load_settings(config)
    try:
        with console.status(f"preparing {name}") as status:
            path = prepare_model(name, settings, force=force, report=status.update)
    except FineloopError as error:
        err_console.print(f"[red]error:[/red] {error.message}")
        raise typer.Exit(1) from error
    console.print(f"[bold]{name}[/bold] is ready at {path}")
