"""`fineloop project create|list|show|update` and `fineloop tasks`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from fineloop import base_models
from fineloop.cli.common import ConfigOption, console, load_settings, opened_store
from fineloop.feedback.rewards import RewardPolicy
from fineloop.schemas import ProjectCreate, ProjectUpdate
from fineloop.store.projects import (
    create_project,
    get_project,
    list_projects,
    project_public,
    update_project,
)
from fineloop.tasks import get_task

app = typer.Typer(help="Create and inspect projects.", no_args_is_help=True)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Lower-case name: letters, digits, - and _.")],
    task: Annotated[
        str, typer.Option(help="An installed task family: `fineloop tasks`.")
    ] = "embedding",
    base_model: Annotated[str | None, typer.Option(help="Local path or hub id.")] = None,
    description: Annotated[str, typer.Option()] = "",
    rating_min: Annotated[float, typer.Option(help="Lowest rating on the scale.")] = 1.0,
    rating_max: Annotated[float, typer.Option(help="Highest rating on the scale.")] = 5.0,
    entity_type: Annotated[
        list[str] | None,
        typer.Option(help="ner: an entity type the model finds (repeat the option)."),
    ] = None,
    options: Annotated[
        str | None,
        typer.Option(help='The task options as JSON, e.g. \'{"entity_types": ["EQUIPMENT"]}\'.'),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Create a project with the default reward policy (and the rating scale given)."""
    try:
        task_options = json.loads(options) if options else {}
        if entity_type:
            task_options["entity_types"] = entity_type
        spec = ProjectCreate.model_validate(
            {
                "name": name,
                "task": task,
                "base_model": base_model,
                "description": description,
                "reward_policy": RewardPolicy.model_validate(
                    {"rating_scale": {"min": rating_min, "max": rating_max}}
                ),
                "task_options": task_options,
            }
        )
    except (ValueError, TypeError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    with opened_store(config) as store:
        if spec.base_model:  # refused here, with the API's message, before it is stored
            base_models.check(load_settings(config), spec.base_model)
        with store.write() as session:
            created = project_public(create_project(session, spec))
    console.print(f"created project [bold]{created.name}[/bold] ({created.task})")


@app.command("list")
def list_all(config: ConfigOption = None) -> None:
    """List projects."""
    with opened_store(config) as store, store.read() as session:
        projects = [project_public(p) for p in list_projects(session)]
    table = Table("name", "task", "base model", "created")
    for project in projects:
        table.add_row(
            project.name,
            project.task,
            project.base_model or "(default)",
            f"{project.created_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


@app.command("show")
def show(name: str, config: ConfigOption = None) -> None:
    """Show one project and its reward policy as JSON."""
    with opened_store(config) as store, store.read() as session:
        project = project_public(get_project(session, name))
    console.print_json(project.model_dump_json())


PolicyOption = Annotated[
    str | None,
    typer.Option(help="JSON merged into the current policy (one level deep for objects)."),
]


@app.command("update")
def update(
    name: str,
    training_policy: PolicyOption = None,
    serving_policy: PolicyOption = None,
    review_policy: PolicyOption = None,
    description: Annotated[str | None, typer.Option()] = None,
    config: ConfigOption = None,
) -> None:
    """Change a project's policies, e.g. `--training-policy '{"refit": true}'`.

    Only the keys given change: the rest of each policy (and of its `train` overrides)
    stays as it is. Checked like the API's PATCH: a typo fails here, not in a job later."""
    given = {
        "training_policy": training_policy,
        "serving_policy": serving_policy,
        "review_policy": review_policy,
    }
    with opened_store(config) as store, store.write() as session:
        current = project_public(get_project(session, name)).model_dump(mode="json")
        try:
            change: dict[str, Any] = {
                key: merged(current[key], json.loads(text))
                for key, text in given.items()
                if text is not None
            }
            if description is not None:
                change["description"] = description
            spec = ProjectUpdate.model_validate(change)
        except (ValueError, TypeError) as error:
            console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(2) from error
        if spec.training_policy is not None:
            get_task(current["task"]).train_config(spec.training_policy.train)
        updated = project_public(update_project(session, name, spec))
    console.print_json(updated.model_dump_json())


def merged(current: dict[str, Any], given: Any) -> dict[str, Any]:
    """`given` over `current`; an object under a key that holds one merges into it."""
    if not isinstance(given, dict):
        raise ValueError(f"a policy is a JSON object, not {type(given).__name__}")
    out = dict(current)
    for key, value in given.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def tasks() -> None:
    """List the installed task families (the `fineloop.tasks` entry points)."""
    from fineloop.tasks import available, get_task

    table = Table("task", "entry point", "primary metric", "better when")
    for name, target in sorted(available().items()):
        try:
            task = get_task(name)
        except Exception as error:  # a broken plugin must not hide the others
            table.add_row(name, target, f"(fails to load: {error})", "")
            continue
        direction = "higher" if task.greater_is_better else "lower"
        table.add_row(name, target, task.primary_metric, direction)
    console.print(table)
