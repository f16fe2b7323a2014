"""`fineloop review list PROJECT`: the review queue, as a table or JSON.

Set how it is ranked with `fineloop project update PROJECT --review-policy
'{"ranking": "disagreement"}'`; answer an interaction with ordinary feedback
(`fineloop feedback import`, the SDK, or the dashboard's review page)."""

from __future__ import annotations

import json
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


def _top(output: Any) -> Any:
    """A ranking's first items, else the output."""
    from fineloop.store.interactions import shown_item_ids

    shown = shown_item_ids(output)
    return ", ".join(shown[:3]) if shown else output


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= INPUT_CHARS else text[: INPUT_CHARS - 1] + "…"
