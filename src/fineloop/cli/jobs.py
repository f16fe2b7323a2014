"""`fineloop jobs list|show|cancel|watch`: jobs in the store, and live on a server."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from fineloop.cli.common import ConfigOption, console, err_console, opened_store
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


EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 3}


@app.command("watch")
def watch(
    job_id: JobId,
    url: Annotated[
        str, typer.Option(envvar="FINELOOP_URL", help="The fineloop server to follow.")
    ] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None,
        typer.Option(envvar="FINELOOP_API_KEY", help="API key, when the server needs one."),
    ] = None,
    retry_seconds: Annotated[
        float, typer.Option(help="Keep reconnecting this long after the connection drops.")
    ] = 60.0,
) -> None:
    """Follow a job live: a progress bar with ETA and the latest metrics, log lines and
    state changes. Exits with the job: 0 succeeded, 1 failed, 3 cancelled."""
    import httpx
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    from fineloop.cli.train import ProgressBar, report
    from fineloop.cli.watch import Message, Unreachable, fetch_job, follow

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[metrics]}"),
    )
    latest: dict[str, str] = {}

    def show(message: Message, bar: ProgressBar) -> None:
        data = message.data if isinstance(message.data, dict) else {}
        if message.event == "progress":
            bar.progress(float(data.get("progress") or 0.0), str(data.get("message") or ""))
        elif message.event == "metric":
            bar.metric(str(data["name"]), int(data["step"]), float(data["value"]))
            latest[str(data["name"])] = f"{data['value']:.4f} (step {data['step']})"
        elif message.event == "state":
            state, text = str((data.get("data") or {}).get("state")), str(data.get("message"))
            bar.bar.console.print(state if text == state else f"{state}: {text}", highlight=False)
        elif message.event in ("log", "cancel", "webhook"):
            bar.log(str(data.get("message", "")))

    try:
        with Progress(*columns, console=console, transient=True) as progress:
            bar = ProgressBar(progress)
            state = follow(
                url,
                job_id,
                lambda message: show(message, bar),
                api_key=api_key,
                retry_for=retry_seconds,
                on_reconnect=lambda why: bar.log(f"{why}; reconnecting"),
            )
        job = fetch_job(url, job_id, api_key)
    except Unreachable as error:
        err_console.print(f"[red]error:[/red] {error}", highlight=False)
        raise typer.Exit(1) from error
    except httpx.HTTPStatusError as error:
        try:
            reason = error.response.json().get("message") or error.response.text
        except ValueError:
            reason = error.response.text
        err_console.print(f"[red]error:[/red] {reason}", highlight=False)
        raise typer.Exit(1) from error
    except KeyboardInterrupt:
        err_console.print(f"stopped watching; job {job_id} goes on")
        raise typer.Exit(130) from None
    if latest:
        shown = ", ".join(f"{name} {value}" for name, value in sorted(latest.items()))
        console.print(f"latest metrics: {shown}", highlight=False)
    state = job.get("state", state)
    if state == "succeeded" and job["kind"] == "train" and "metrics" in (job["result"] or {}):
        report(job)
    else:
        style = "green" if state == "succeeded" else "red"
        why = job.get("error") or job.get("message") or ""
        console.print(f"[{style}]job {job_id} {state}:[/{style}] {why}", highlight=False)
    raise typer.Exit(EXIT_CODES.get(state, 1))
