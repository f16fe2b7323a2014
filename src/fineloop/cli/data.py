"""`fineloop items import` and `fineloop feedback import|export|stats`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from fineloop.cli.common import ConfigOption, console, opened_store
from fineloop.errors import Invalid
from fineloop.feedback.stats import reward_stats
from fineloop.schemas import ImportReport
from fineloop.store import Store
from fineloop.store.projects import get_project, policy_of
from fineloop.transfer.formats import guess_format
from fineloop.transfer.service import export_file, import_file

items_app = typer.Typer(help="Manage a project's items (its catalog).", no_args_is_help=True)
feedback_app = typer.Typer(help="Import, export and summarize feedback.", no_args_is_help=True)

ProjectOption = Annotated[str, typer.Option("--project", "-p", help="Project name.")]
FormatOption = Annotated[
    str | None, typer.Option("--format", "-f", help="jsonl, csv or parquet (default: from name).")
]


def _import(
    config: Path | None, project: str, resource: str, path: Path, fmt: str | None
) -> list[ImportReport]:
    data = path.read_bytes()
    with opened_store(config) as store, _progress() as progress:
        chosen = fmt or guess_format(path.name)
        task = progress.add_task(f"importing {path.name}", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return import_file(store, project, resource, data, chosen, advance)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def _report(reports: list[ImportReport]) -> None:
    for report in reports:
        console.print(
            f"{report.resource}: {report.rows} rows, {report.created} new, "
            f"{report.duplicates} already present"
        )


@items_app.command("import")
def import_items(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="File to import.")],
    project: ProjectOption,
    fmt: FormatOption = None,
    config: ConfigOption = None,
) -> None:
    """Upsert items from a file with columns id, text and (JSON) metadata."""
    _report(_import(config, project, "items", path, fmt))


@feedback_app.command("import")
def import_feedback(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="File to import.")],
    project: ProjectOption,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="jsonl, csv, parquet, oasst (Open-Assistant trees) or chat (prompt/"
            "completion, messages or chosen/rejected lines).",
        ),
    ] = None,
    resource: Annotated[
        str, typer.Option(help="feedback, or interactions to import those instead.")
    ] = "feedback",
    config: ConfigOption = None,
) -> None:
    """Import feedback events (or interactions) all or nothing; bad rows are listed by line."""
    _report(_import(config, project, resource, path, fmt))


@feedback_app.command("export")
def export_feedback(
    project: ProjectOption,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
    fmt: FormatOption = None,
    resource: Annotated[str, typer.Option(help="feedback, interactions or items.")] = "feedback",
    config: ConfigOption = None,
) -> None:
    """Export a project's feedback (or interactions, or items)."""
    chosen = fmt or (guess_format(output.name) if output else "jsonl")
    with opened_store(config) as store:
        _write(store, project, resource, chosen, output)


def _write(store: Store, project: str, resource: str, fmt: str, output: Path | None) -> None:
    if output is None:
        if fmt == "parquet":
            raise Invalid("parquet is binary: give --output FILE")
        for chunk in export_file(store, project, resource, fmt):
            sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
        return
    with output.open("wb") as handle:
        for chunk in export_file(store, project, resource, fmt):
            handle.write(chunk)
    console.print(f"wrote {output}", style="dim", highlight=False, soft_wrap=True)  # a path whole


@feedback_app.command("stats")
def stats(project: ProjectOption, config: ConfigOption = None) -> None:
    """Counts by kind, the reward histogram and activity per day."""
    with opened_store(config) as store, store.read() as session:
        found = get_project(session, project)
        summary = reward_stats(session, found.id, policy_of(found))
    mean = "n/a" if summary.mean_reward is None else f"{summary.mean_reward:+.3f}"
    console.print(
        f"[bold]{project}[/bold]: {summary.total} events, {summary.trainable} usable for "
        f"training, mean reward {mean}"
    )
    kinds = Table("kind", "events")
    for kind, count in summary.by_kind.items():
        kinds.add_row(kind, str(count))
    console.print(kinds)
    peak = max((b.count for b in summary.histogram), default=0) or 1
    histogram = Table("reward", "events", "")
    for bin_ in summary.histogram:
        if bin_.count:
            bar = "█" * max(1, round(30 * bin_.count / peak))
            histogram.add_row(f"{bin_.low:+.1f}..{bin_.high:+.1f}", str(bin_.count), bar)
    console.print(histogram)
    days = Table("day", "events", "mean reward")
    for bucket in summary.over_time[-14:]:
        days.add_row(f"{bucket.start:%Y-%m-%d}", str(bucket.count), f"{bucket.mean_reward:+.3f}")
    console.print(days)
