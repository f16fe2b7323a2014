"""`fineloop models export PROJECT VERSION --out DIR [--merged] [--ollama]`.

Runs here, against the store and the artifact root, not through the server: exports are
model-sized files that belong on the machine that will serve them, not in an HTTP answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fineloop.cli.common import ConfigOption, console, load_settings, opened_store
from fineloop.errors import Invalid
from fineloop.store.projects import get_project

GENERATION = "generation"


def export(
    project: Annotated[str, typer.Argument(help="A generation project.")],
    ref: Annotated[str, typer.Argument(help="Version: v3, 3, or an alias such as champion.")],
    out: Annotated[Path, typer.Option("--out", help="A new (or empty) folder to write to.")],
    merged: Annotated[
        bool, typer.Option("--merged", help="Write the adapter merged into its base.")
    ] = False,
    ollama: Annotated[
        bool, typer.Option("--ollama", help="Write an Ollama Modelfile (FROM + ADAPTER).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Export a generation version: merged safetensors and/or an Ollama Modelfile."""
    settings = load_settings(config)
    with opened_store(config) as store:
        with store.read() as session:
            found = get_project(session, project)
            if found.task != GENERATION:
                raise Invalid(
                    f"project {project!r} has task {found.task!r}: export writes generation "
                    "models only (merged weights, an Ollama Modelfile)",
                    field="project",
                )
            from fineloop.registry.versions import resolve

            version = resolve(session, found, ref)
            label, uri = f"v{version.number}", version.artifact_uri
        from fineloop import artifacts
        from fineloop.tasks.generation.export import export_version
        from fineloop.tasks.generation.task import ensure_prepared

        local = artifacts.fetch(settings, uri)
        ensure_prepared(local)  # the default base, converted on first use
        with console.status(f"exporting {project} {label}"):
            report = export_version(
                local,
                out,
                merged=merged,
                ollama=ollama,
                about={"project": project, "version": label, "artifact_uri": uri},
            )
    console.print(f"exported [bold]{project} {label}[/bold] to {report.out_dir}")
    if report.merged:
        console.print(f"  merged model: {report.merged}")
    if report.modelfile:
        template = "with" if report.chat_template else "without"
        console.print(f"  Modelfile ({template} chat template): {report.modelfile}")
        console.print(f"  then: cd {report.out_dir} && ollama create {project}-{label}")
