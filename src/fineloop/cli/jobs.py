"""`fineloop jobs list|show|cancel`: training jobs in the store."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from fineloop.cli.common import ConfigOption, console, opened_store
from fineloop.jobs import store as jobs
from fineloop.store.projects import get_project

app = typer.Typer(help="Follow and cancel training jobs.", no_args_is_help=True)

JobId = Annotated[int, typer.Argument(help="Job id.")]


@app.command("list")
def list_jobs(
    project: Annotated[str, typer.Argument(help="Project name.")],
    limit: Annotated[int, typer.Option(help="Most jobs shown.")] = 20,
    config: ConfigOption = None,
) -> None:
    """The project's jobs, newest first."""
    with opened_store(config) as store, store.read() as session:
        found = get_project(session, project)
        rows = [jobs.job_public(session, j) for j in jobs.list_jobs(session, found.id, limit=limit)]
    table = Table("id", "kind", "state", "progress", "version", "message", "created")
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["kind"],
            row["state"],
            f"{row['progress']:.0%}",
            row["version"] or "-",
            (row["error"] or row["message"])[:60],
            row["created_at"][:19].replace("T", " "),
        )
    console.print(table)


@app.command("show")
def show(
    job_id: JobId,
    events: Annotated[int, typer.Option(help="Latest events shown (0: none).")] = 10,
    config: ConfigOption = None,
) -> None:
    """One job as JSON, then its latest events."""
    with opened_store(config) as store, store.read() as session:
        found = jobs.job_public(session, jobs.get_job(session, job_id))
        latest = jobs.events(session, job_id, limit=100_000)[-events:] if events else []
    console.print_json(data=found)
    for event in latest:
        console.print(
            f"{event.at:%H:%M:%S} {event.kind:6} {event.message}", highlight=False, markup=False
        )


@app.command("cancel")
def cancel(job_id: JobId, config: ConfigOption = None) -> None:
    """Cancel a queued job now, or ask a running one to stop."""
    with opened_store(config) as store, store.write() as session:
        job = jobs.request_cancel(session, job_id)
        state, asked = job.state, job.cancel_requested
    if state == jobs.RUNNING and asked:
        console.print(f"job {job_id}: cancel requested; it stops within seconds")
    else:
        console.print(f"job {job_id}: {state}")
