"""The `fineloop` command line (Typer). Heavy imports happen inside commands.

Task families add their own commands (generation: `generate`, NER: `extract`) through
`Task.commands`, registered here at import like the built-in ones.

A light install (`pip install fineloop`) runs the client and store commands; a command that
reaches for a module an extra provides prints the `pip install 'fineloop[...]'` line instead
of a traceback.
"""

from __future__ import annotations

import logging

import typer
from rich.markup import escape

from fineloop.cli import data, jobs, keys, models, projects, rollouts, serve, train, tune
from fineloop.cli import export as export_cli
from fineloop.cli import index as index_cli
from fineloop.cli import review as review_cli
from fineloop.cli import worker as worker_cli
from fineloop.cli.common import err_console
from fineloop.extras import hint_for

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
models.app.command("export")(export_cli.export)
app.add_typer(models.app, name="models")
app.add_typer(jobs.app, name="jobs")
app.add_typer(rollouts.app, name="rollout")
app.add_typer(review_cli.app, name="review")
app.add_typer(index_cli.app, name="index")

log = logging.getLogger(__name__)


def add_task_commands(target: typer.Typer) -> list[str]:
    """Register every installed family's commands on `target`; the names added. A family
    whose commands fail to load (a broken plugin, a light install without its extra) is
    skipped with a debug log, and a name already taken keeps its first owner: one plugin
    never breaks the CLI nor replaces a command."""
    from fineloop.tasks import available, get_task

    taken = {c.name for c in target.registered_commands}
    taken |= {g.name for g in target.registered_groups}
    added = []
    for name in sorted(available()):
        try:
            commands = dict(get_task(name).commands())
        except Exception:
            log.debug("task %r adds no commands: loading them failed", name, exc_info=True)
            continue
        for command, function in commands.items():
            if command in taken:
                log.warning("task %r: command %r already exists; skipped", name, command)
                continue
            target.command(command)(function)
            taken.add(command)
            added.append(command)
    return added


add_task_commands(app)


def main() -> None:
    try:
        app()
    except ImportError as error:
        hint = hint_for(error)
        if hint is None:
            raise
        err_console.print(f"[red]error:[/red] {escape(str(hint))}", soft_wrap=True)
        raise SystemExit(1) from error
