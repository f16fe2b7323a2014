"""The review page's data: one page of the project's review queue, each interaction with
what it showed. A ranking's items come with their catalog text, so the reviewer can pick
the right one or reject them all; any other output is answered with a thumb. Whatever the
family lets a reviewer rewrite (`edit`: a reply, NER spans as lines, the right item ids,
looked up in the catalog) opens in an editor. The page writes ordinary feedback through
the JSON API (POST /v1/projects/{p}/feedback and /v1/projects/{p}/review/{interaction})."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fineloop.feedback.review import ReviewItem, review_queue
from fineloop.policies import ReviewRanking
from fineloop.store.interactions import shown_item_ids
from fineloop.store.projects import get_project
from fineloop.store.schema import Item
from fineloop.web.interactions import as_text

PAGE = 50  # interactions the page holds; it fetches the next ones from the API
SHOWN = 9  # items of a ranking the page shows: keys 1-9 pick one
ITEM_CHARS = 400


def review_page(session: Session, name: str, ranking: ReviewRanking | None) -> dict[str, Any]:
    """Everything the review page shows; NotFound for an unknown project."""
    project = get_project(session, name)
    queue = review_queue(session, name, ranking=ranking, limit=PAGE)
    wanted = {i for q in queue.items for i in (shown_item_ids(q.interaction.output) or [])[:SHOWN]}
    texts = _item_texts(session, project.id, wanted)
    return {
        "project": {"name": project.name, "task": project.task},
        "ranking": queue.ranking,
        "rankings": ["uncertainty", "disagreement", "random", "recent"],
        "ranked": queue.ranked,
        "more": queue.more or queue.next_offset is not None,
        "items": [review_row(q, texts) for q in queue.items],
        "catalog": _has_items(session, project.id),
    }


def review_row(queued: ReviewItem, texts: dict[str, str]) -> dict[str, Any]:
    """One interaction as the page shows it (the script renders the API's items the same
    way: keep the two in step)."""
    interaction = queued.interaction
    output: Any = interaction.output
    ranked = shown_item_ids(output)
    entries = output.get("items", []) if isinstance(output, dict) else []
    by_id = {e.get("id"): e for e in entries if isinstance(e, dict)}
    shown = [
        {
            "n": n,
            "id": item_id,
            "text": texts.get(item_id, ""),
            "score": _number(by_id.get(item_id, {}).get("score")),
            "probability": _number(by_id.get(item_id, {}).get("probability")),
            "selected": by_id.get(item_id, {}).get("selected") is True,
        }
        for n, item_id in enumerate((ranked or [])[:SHOWN], start=1)
    ]
    return {
        "id": interaction.id,
        "input": as_text(interaction.input),
        "output": None if ranked else as_text(output),
        "shown": shown,
        "actions": "selection" if shown else "thumb",
        "reason": queued.reason,
        "score": queued.score,
        "disagrees_with": queued.disagrees_with,
        "edit": queued.edit.model_dump() if queued.edit is not None else None,
        "model_version": interaction.model_version,
        "variant": interaction.variant,
        "created_at": interaction.created_at.isoformat(),
    }


def _has_items(session: Session, project_id: int) -> bool:
    """Whether the project has a catalog to look the right item up in."""
    first = select(Item.item_id).where(Item.project_id == project_id).limit(1)
    return session.scalar(first) is not None


def _item_texts(session: Session, project_id: int, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    rows = session.execute(
        select(Item.item_id, Item.text).where(Item.project_id == project_id, Item.item_id.in_(ids))
    )
    return {
        item_id: text if len(text) <= ITEM_CHARS else text[:ITEM_CHARS] + " …"
        for item_id, text in rows
    }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
