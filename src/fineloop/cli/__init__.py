"""The `fineloop` command line (Typer). Heavy imports happen inside commands."""

from __future__ import annotations

import typer

from fineloop.cli import data, jobs, keys, models, projects, serve, train

app = typer.Typer(
    name="fineloop",
    help="From user feedback to better models: ingest, reward, train, evaluate, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.add_typer(projects.app, name="project")
app.add_typer(data.items_app, name="items")
app.add_typer(data.feedback_app, name="feedback")
app.add_typer(keys.app, name="keys")
app.command("train")(train.train)
app.add_typer(models.app, name="models")
app.add_typer(jobs.app, name="jobs")


def main() -> None:
    app()
