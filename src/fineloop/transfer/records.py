"""The three resources that travel in files: how a file row maps to an API object and back.

A file row looks like the API's JSON for that resource. Exported rows add what fineloop
derived (ids, rewards, received_at); importing ignores those, so an export imports again.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import Session

from fineloop.feedback.events import EventEnvelope, FeedbackEvent
from fineloop.feedback.query import feedback_public
from fineloop.feedback.rewards import RewardPolicy
from fineloop.schemas import InteractionCreate, ItemIn
from fineloop.store.schema import Feedback, Interaction, Item

Resource = Literal["items", "interactions", "feedback"]
RESOURCES: tuple[str, ...] = ("items", "interactions", "feedback")

_EVENT = TypeAdapter[EventEnvelope](FeedbackEvent)
_PAGE = 2_000


@dataclass(frozen=True)
class Layout:
    columns: list[str]
    derived: frozenset[str]  # exported for reading, dropped on import


LAYOUTS: dict[str, Layout] = {
    "items": Layout(["id", "text", "metadata"], frozenset({"updated_at"})),
    "interactions": Layout(
        [
            "id",
            "input",
            "output",
            "model_version",
            "variant",
            "user_id",
            "latency_ms",
            "created_at",
            "metadata",
        ],
        frozenset(),
    ),
    "feedback": Layout(
        [
            "kind",
            "interaction_id",
            "input",
            "user_id",
            "timestamp",
            "idempotency_key",
            "difficulty",
            "metadata",
            "value",
            "output",
            "selected",
            "rejected",
            "chosen",
            "chosen_interaction_id",
            "rejected_interaction_id",
            "label",
            "spans",
            "items",
            "id",
            "reward",
            "received_at",
        ],
        frozenset({"id", "reward", "effective_reward", "trainable", "received_at"}),
    ),
}


# Numeric columns. A CSV cell is text, so "4" in one of these is read as the number 4; a
# JSON or Parquet value keeps its type and is checked as strictly as in the API (a boolean
# is not a number).
NUMERIC = frozenset({"latency_ms", "difficulty", "value"})
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def parse(resource: str, row: dict[str, Any]) -> ItemIn | InteractionCreate | EventEnvelope:
    """Validate one file row into the API object; pydantic errors name the field."""
    kept = {
        k: _number(v) if k in NUMERIC else v
        for k, v in row.items()
        if k not in LAYOUTS[resource].derived
    }
    if resource == "items":
        return ItemIn.model_validate(kept)
    if resource == "interactions":
        return InteractionCreate.model_validate(kept)
    return _EVENT.validate_python(kept)


def _number(cell: Any) -> Any:
    """A text cell holding an ASCII decimal number, as that number; anything else as is
    (a thumb's "up" stays text, and validation says what is wrong with the rest)."""
    if not isinstance(cell, str) or not _NUMBER.fullmatch(text := cell.strip()):
        return cell
    return float(text)


def export_rows(
    session: Session, project_id: int, resource: str, policy: RewardPolicy
) -> Iterator[dict[str, Any]]:
    """Stream a project's rows of `resource` in id order, a page at a time."""
    if resource == "items":
        yield from _items(session, project_id)
    elif resource == "interactions":
        yield from _interactions(session, project_id)
    else:
        yield from _feedback(session, project_id, policy)


def _items(session: Session, project_id: int) -> Iterator[dict[str, Any]]:
    last = 0
    while rows := list(
        session.scalars(
            select(Item)
            .where(Item.project_id == project_id, Item.id > last)
            .order_by(Item.id)
            .limit(_PAGE)
        )
    ):
        for row in rows:
            yield {"id": row.item_id, "text": row.text, "metadata": row.item_metadata}
        last = rows[-1].id


def _interactions(session: Session, project_id: int) -> Iterator[dict[str, Any]]:
    last: tuple[datetime, str] = (datetime.min.replace(tzinfo=UTC), "")
    while True:
        rows = list(
            session.scalars(
                select(Interaction)
                .where(
                    Interaction.project_id == project_id,
                    (Interaction.created_at > last[0])
                    | ((Interaction.created_at == last[0]) & (Interaction.id > last[1])),
                )
                .order_by(Interaction.created_at, Interaction.id)
                .limit(_PAGE)
            )
        )
        if not rows:
            return
        for row in rows:
            yield {
                "id": row.id,
                "input": row.input,
                "output": row.output,
                "model_version": row.model_version,
                "variant": row.variant,
                "user_id": row.user_id,
                "latency_ms": row.latency_ms,
                "created_at": row.created_at.isoformat(),
                "metadata": row.interaction_metadata,
            }
        last = (rows[-1].created_at, rows[-1].id)


def _feedback(session: Session, project_id: int, policy: RewardPolicy) -> Iterator[dict[str, Any]]:
    now = datetime.now(UTC)
    last = 0
    while rows := list(
        session.scalars(
            select(Feedback)
            .where(Feedback.project_id == project_id, Feedback.id > last)
            .order_by(Feedback.id)
            .limit(_PAGE)
        )
    ):
        for row in rows:
            public = feedback_public(row, policy, now)
            out: dict[str, Any] = {
                "kind": public.kind,
                "interaction_id": public.interaction_id,
                "input": public.input,
                "user_id": public.user_id,
                "timestamp": public.timestamp.isoformat(),
                "idempotency_key": public.idempotency_key,
                "difficulty": public.difficulty,
                "metadata": public.metadata,
                **public.payload,
                "id": public.id,
                "reward": public.reward,
                "received_at": public.received_at.isoformat(),
            }
            yield {k: v for k, v in out.items() if v is not None}
        last = rows[-1].id
