"""`fineloop tune PROJECT`: a hyperparameter search, queued for the server (or run here).

Named `tune` because `search` is what a project's model does for its users (the serving
route `POST /v1/projects/{project}/search`).

With `--foreground` the search runs in this process with a progress bar, recorded in the
store exactly as a worker would record it; then its trials and the gate decision on the
best one are printed.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer
from rich.table import Table

from fineloop.cli.common import ConfigOption, console, load_settings, opened_store
from fineloop.cli.train import parse_sets, report, run_here
from fineloop.extras import require


def tune(
    project: Annotated[str, typer.Argument(help="Project to search hyperparameters for.")],
    trials: Annotated[int, typer.Option("--trials", help="Trials to run (at most).")] = 10,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="Start no new trial after this many seconds."),
    ] = None,
    space: Annotated[
        str | None,
        typer.Option(
            "--space",
            help='Search space changes as JSON, e.g. \'{"learning_rate": {"type": "float", '
            '"low": 1e-5, "high": 1e-3, "log": true}, "loss": null}\'.',
        ),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="Fixed training value for every trial, key=value."),
    ] = None,
    pruner: Annotated[
        str, typer.Option("--pruner", help="median (default), none, or a JSON pruner config.")
    ] = "median",
    seed: Annotated[int, typer.Option("--seed", help="The sampler's seed.")] = 13,
    foreground: Annotated[
        bool,
        typer.Option(
            "--foreground", help="Run here with a progress bar instead of queueing the job."
        ),
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Search training hyperparameters with Optuna; register the best trial's model."""
    require("server", ("optuna",), "`fineloop tune`")
    from fineloop.jobs import store as jobs
    from fineloop.jobs.search_space import start_search
    from fineloop.jobs.worker import worker_name

    body: dict[str, Any] = {
        "n_trials": trials,
        "timeout_seconds": timeout,
        "seed": seed,
        "train": parse_sets(sets or []),
        "space": _json(space, "--space") if space else {},
        "pruner": _json(pruner, "--pruner") if pruner.startswith("{") else {"kind": pruner},
    }
    os.environ.setdefault("TQDM_DISABLE", "1")
    settings = load_settings(config)
    with opened_store(config) as store:
        if not foreground:
            queued = start_search(store, project, body)
            console.print(f"queued search job {queued.id}; a running `fineloop serve` runs it")
            return
        job = start_search(store, project, body, claimed_by=worker_name())
        console.print(f"job {job.id}: searching hyperparameters of [bold]{project}[/bold]")
        run_here(store, settings, job)
        with store.read() as session:
            done = jobs.job_public(session, jobs.get_job(session, job.id))
            children = [
                jobs.job_public(session, row)
                for row in jobs.list_jobs(session, job.project_id, limit=10_000)
                if row.parent_id == job.id
            ]
    show_trials(sorted(children, key=lambda row: row["id"]))
    report(done)
    if done["state"] != jobs.SUCCEEDED:
        raise typer.Exit(1)


def show_trials(rows: list[dict[str, Any]]) -> None:
    table = Table("trial", "job", "state", "validation", "values", title="trials")
    for row in rows:
        result = row["result"] or {}
        value = result.get("value")
        table.add_row(
            str(row["config"].get("trial")),
            str(row["id"]),
            str(result.get("state") or row["state"]),
            "-" if value is None else f"{value:.4f}",
            json.dumps(row["config"].get("params")),
        )
    console.print(table)


def _json(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise typer.BadParameter(f"not JSON: {error}", param_hint=option) from None
    if not isinstance(value, dict):
        raise typer.BadParameter("give a JSON object", param_hint=option)
    return value
