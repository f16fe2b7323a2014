"""`fineloop extract PROJECT "text"`: find entities with a running server's NER project.

A client like `fineloop generate`: the model is served by the server (FINELOOP_URL). It
prints the spans as a table (or the server's answer as JSON with `--json`), and on stderr
the interaction ids to attach corrections to, with the version that answered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from fineloop.cli.common import DEFAULT_URL, ApiKey, ServerUrl, console, err_console, server_client


def extract(
    project: Annotated[str, typer.Argument(help="A NER project.")],
    text: Annotated[
        str | None, typer.Argument(help="The text to find entities in (or use --file).")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            exists=True,
            dir_okay=False,
            help="A UTF-8 file of texts, one per line (blank lines skipped).",
        ),
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="A version or alias (default: routed, the champion).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the server's answer as JSON.")
    ] = False,
    url: ServerUrl = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Extract entity spans with the project's served model; logs one interaction per text."""
    texts = _texts(text, file)
    with server_client(url, api_key) as client:
        answer = client.extract(project, texts, version=version)
    if as_json:
        typer.echo(json.dumps(answer, ensure_ascii=False, indent=2))
    else:
        console.print(_table(answer["results"]))
    ids = ", ".join(r["interaction_id"] for r in answer["results"])
    err_console.print(f"interactions {ids} ({answer['model_version']})", highlight=False)


def _texts(text: str | None, file: Path | None) -> list[str]:
    if (text is None) == (file is None):
        err_console.print("[red]error:[/red] give a text or --file, not both")
        raise typer.Exit(2)
    if file is None:
        assert text is not None
        return [text]
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        err_console.print(f"[red]error:[/red] cannot read {file}: {escape(str(error))}")
        raise typer.Exit(2) from error
    found = [line for line in lines if line.strip()]
    if not found:
        err_console.print(f"[red]error:[/red] {file} holds no text")
        raise typer.Exit(2)
    return found


def _table(results: list[dict[str, Any]]) -> Table:
    table = Table("#", "span", "label", "score", "where", "source")
    for number, result in enumerate(results, start=1):
        if not result["spans"]:
            table.add_row(str(number), "[dim](no entity)[/dim]", "", "", "", "")
        for span in result["spans"]:
            table.add_row(
                str(number),
                escape(span["text"]),
                escape(span["label"]),
                f"{span['score']:.2f}",
                f"{span['start']}-{span['end']}",
                span.get("source", "model"),
            )
    return table
