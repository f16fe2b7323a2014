"""The `fineloop` command line (Typer). Heavy imports happen inside commands."""

from __future__ import annotations

import typer

from fineloop.cli import data, jobs, keys, models, projects, rollouts, serve, train, tune
from fineloop.cli import worker as worker_cli

app = typer.Typer(
    name="fineloop",
    help="From user feedback to better models: ingest, reward, train, evaluate, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.command("worker")(worker_cli.worker)
app.add_typer(projects.app, name="project")
app.command("tasks")(projects.tasks)
app.add_typer(data.items_app, name="items")
app.add_typer(data.feedback_app, name="feedback")
app.add_typer(keys.app, name="keys")
app.command("train")(train.train)
app.command("tune")(tune.tune)
app.add_typer(models.app, name="models")
app.add_typer(jobs.app, name="jobs")
app.add_typer(rollouts.app, name="rollout")


def main() -> None:
    app()
