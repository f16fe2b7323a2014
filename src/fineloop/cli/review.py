"""`fineloop review list PROJECT`: the review queue, as a table or JSON; `fineloop review
edit PROJECT INTERACTION`: rewrite one (a reply, NER spans, the right items).

Set how it is ranked with `fineloop project update PROJECT --review-policy
'{"ranking": "disagreement"}'`; answer an interaction with ordinary feedback
(`fineloop feedback import`, the SDK, or the dashboard's review page)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, cast, get_args

import typer
from rich.markup import escape
from rich.table import Table

from fineloop.cli.common import ConfigOption, console, opened_store
from fineloop.policies import ReviewRanking

app = typer.Typer(
    help="The review queue: interactions without feedback, most useful first.",
    no_args_is_help=True,
)
INPUT_CHARS = 80
RANKINGS: tuple[str, ...] = get_args(ReviewRanking)


@app.command("list")
def list_queue(
    project: Annotated[str, typer.Argument(help="Project name.")],
    limit: Annotated[
        int | None,
        typer.Option(min=1, max=500, help="How many (default: the project's review_policy)."),
    ] = None,
    ranking: Annotated[
        str | None,
        typer.Option(help="uncertainty, disagreement, random or recent (default: the policy's)."),
    ] = None,
    offset: Annotated[int, typer.Option(min=0, max=50_000, help="Skip this many.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="The API's JSON instead.")] = False,
    config: ConfigOption = None,
) -> None:
    """Interactions nobody gave feedback on yet, ranked by the project's review policy."""
    from fineloop.feedback.review import review_queue

    if ranking is not None and ranking not in RANKINGS:
        raise typer.BadParameter(f"one of {', '.join(RANKINGS)}", param_hint="--ranking")
    chosen = cast("ReviewRanking | None", ranking)
    with opened_store(config) as store, store.read() as session:
        page = review_queue(session, project, ranking=chosen, limit=limit, offset=offset)
    if as_json:
        console.print_json(page.model_dump_json())
        return
    table = Table("#", "interaction", "input", "shown", "reason", "score", "version")
    for n, item in enumerate(page.items, start=offset + 1):
        interaction = item.interaction
        table.add_row(
            str(n),
            escape(interaction.id),
            escape(_short(interaction.input)),
            escape(_short(_top(interaction.output))),
            item.reason + (f" ({', '.join(item.disagrees_with)})" if item.disagrees_with else ""),
            "-" if item.score is None else f"{item.score:.3f}",
            escape(interaction.model_version or "-"),
        )
    console.print(table)
    more = f"; next: --offset {page.next_offset}" if page.next_offset is not None else ""
    console.print(f"{len(page.items)} of {page.ranked} ranked by {page.ranking}{more}")


@app.command("edit")
def edit(
    project: Annotated[str, typer.Argument(help="Project name.")],
    interaction: Annotated[str, typer.Argument(help="The interaction's id.")],
    text: Annotated[str | None, typer.Option(help="The rewritten text.")] = None,
    file: Annotated[
        Path | None, typer.Option(help="Read the rewritten text from a file ('-': stdin).")
    ] = None,
    key: Annotated[str | None, typer.Option(help="Idempotency key: a rerun stores once.")] = None,
    user: Annotated[str | None, typer.Option(help="Who reviewed it.")] = None,
    config: ConfigOption = None,
) -> None:
    """Rewrite an interaction's output as its family reads it (a reply as it should have
    been, NER spans as TYPE: text lines, the right item ids); stored as ordinary feedback.
    Without --text or --file, print what to start from and how to write it."""
    from fineloop.errors import NotFound, validated
    from fineloop.feedback.review_rewrite import ReviewRewrite, rewrite_event
    from fineloop.operations import store_feedback
    from fineloop.store.projects import get_project
    from fineloop.store.schema import Interaction
    from fineloop.tasks import get_task

    if text is not None and file is not None:
        raise typer.BadParameter("give --text or --file, not both", param_hint="--file")
    if file is not None:
        text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    with opened_store(config) as store:
        if text is None:
            with store.read() as session:
                found = get_project(session, project)
                row = session.get(Interaction, (found.id, interaction))
                if row is None:
                    raise NotFound(f"no interaction {interaction!r} in project {project!r}")
                options = dict(found.task_options or {})
                start = get_task(found.task).review_edit(options, (row.input, row.output))
            if start is None:
                console.print("this interaction's output cannot be rewritten")
                raise typer.Exit(1)
            console.print(f"[bold]{start.action}[/bold]: {escape(start.hint)}")
            console.print(escape(start.text), highlight=False)
            return
        values = {"text": text, "idempotency_key": key, "user_id": user}
        rewrite = validated(ReviewRewrite, values)
        with store.read() as session:
            event = rewrite_event(session, project, interaction, rewrite)
        stored = store_feedback(store, project, [event])[0]
    said = "stored" if stored.created else "already stored (same key)"
    kind = getattr(event, "kind", "feedback")
    console.print(f"{kind} {stored.id} {said}; reward {stored.reward:+.2f}")


def _top(output: Any) -> Any:
    """A ranking's first items, else the output."""
    from fineloop.store.interactions import shown_item_ids

    shown = shown_item_ids(output)
    return ", ".join(shown[:3]) if shown else output


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= INPUT_CHARS else text[: INPUT_CHARS - 1] + "…"
