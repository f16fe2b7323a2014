"""Feedback events → judged (query, item) signals → deduplicated examples.

Which events count, and as what:
- selection: each `selected` id is a positive for the query, each `rejected` id a hard
  negative. Items shown but neither picked nor rejected are not negatives (the user may
  simply not have looked at them). A selection that rejected everything gives negatives only.
  Each judgment keeps the rank the item was shown at: a rejection of the second result
  teaches more than one of the tenth, so snapshots use the highest-ranked rejections first.
- thumb on an interaction whose output is a ranking: up makes the first shown item a
  positive, down makes it a hard negative.
- label with `items`: each item is a positive. Labels need no interaction (the event's own
  `input` is the query), which is how a cold start imports (query, item) pairs.
Only trainable events count (|effective reward| ≥ the policy's quality threshold). The
query is the event's `input` when given, else its interaction's; a dict input is read at
"query" or "text". Events naming an item the catalog lacks are skipped whole and counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fineloop.feedback.rewards import RewardPolicy, effective_reward, usable_for_training
from fineloop.store.interactions import shown_item_ids
from fineloop.store.schema import Feedback, Interaction, Item

KINDS = ("selection", "thumb", "label")
_CHUNK = 500


@dataclass(frozen=True)
class Signal:
    """One judgment of one item for one query, from one feedback event."""

    feedback_id: int
    query: str
    group: str | None
    item_id: str
    positive: bool
    strength: float  # |effective reward| in [0, 1]: the graded score of a positive
    rank: int  # where the item was shown (0 = first); else its place in the event's list


@dataclass
class Example:
    """A deduplicated (query, positive item) pair and everything that backs it."""

    query: str
    item_id: str
    score: float
    feedback_ids: set[int] = field(default_factory=set)


@dataclass
class Harvest:
    """What the feedback of a project yields, before grouping and splitting."""

    signals: list[Signal]
    watermark: int  # the largest feedback id read
    as_of: datetime | None  # the newest feedback timestamp: the reference time for decay
    stats: Counter[str]


def query_text(value: Any, max_chars: int) -> str | None:
    """The query in an input: a string, or a dict's "query" or "text" string."""
    if isinstance(value, dict):
        value = value.get("query", value.get("text"))
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:max_chars]


def group_of(metadata: Any) -> str | None:
    if not isinstance(metadata, dict) or metadata.get("group") in (None, ""):
        return None
    group = metadata["group"]
    return group if isinstance(group, str) else str(group)


def harvest(
    session: Session, project_id: int, policy: RewardPolicy, *, max_query_chars: int
) -> Harvest:
    """Read the project's feedback (up to the largest id at this moment) as signals.

    Decay is measured from the newest feedback timestamp rather than the wall clock, so
    rebuilding later over the same feedback yields the same snapshot.
    """
    stats: Counter[str] = Counter()
    watermark = session.scalar(
        select(func.max(Feedback.id)).where(Feedback.project_id == project_id)
    )
    if watermark is None:
        return Harvest([], 0, None, stats)
    scope = (Feedback.project_id == project_id, Feedback.id <= watermark)
    as_of = session.scalar(select(func.max(Feedback.timestamp)).where(*scope))
    assert as_of is not None
    rows = list(
        session.scalars(
            select(Feedback).where(*scope, Feedback.kind.in_(KINDS)).order_by(Feedback.id)
        )
    )
    stats["events_read"] = len(rows)
    interactions = _interactions(session, project_id, {r.interaction_id for r in rows})
    catalog = _known_items(session, project_id, rows, interactions)
    signals: list[Signal] = []
    for row in rows:
        effective = effective_reward(policy, row.reward, row.timestamp, as_of)
        if not usable_for_training(policy, effective):
            stats["events_untrainable"] += 1
            continue
        interaction = interactions.get(row.interaction_id) if row.interaction_id else None
        query = query_text(row.input, max_query_chars)
        if query is None and interaction is not None:
            query = query_text(interaction.input, max_query_chars)
        if query is None:
            stats["events_without_query"] += 1
            continue
        judged = _judgments(row, interaction, stats)
        if not judged:
            continue
        if any(item_id not in catalog for item_id, _ in judged):
            stats["events_with_unknown_items"] += 1
            continue
        group = group_of(row.feedback_metadata)
        if group is None and interaction is not None:
            group = group_of(interaction.interaction_metadata)
        strength = min(1.0, abs(effective))
        shown = shown_item_ids(interaction.output) if interaction is not None else None
        signals += [
            Signal(row.id, query, group, item_id, positive, strength, rank)
            for item_id, positive, rank in _ranked(judged, shown or [])
        ]
        stats["events_used"] += 1
    return Harvest(signals, watermark, as_of, stats)


def _ranked(judged: list[tuple[str, bool]], shown: list[str]) -> Iterator[tuple[str, bool, int]]:
    """Each judgment with its item's rank among those shown; an item that was not shown
    ranks after every shown one, in the order the event lists it."""
    at = {item_id: rank for rank, item_id in reversed(list(enumerate(shown)))}
    for position, (item_id, positive) in enumerate(judged):
        yield item_id, positive, at.get(item_id, len(shown) + position)


def _judgments(
    row: Feedback, interaction: Interaction | None, stats: Counter[str]
) -> list[tuple[str, bool]]:
    """(item id, is positive) pairs an event states."""
    payload = row.payload
    if row.kind == "selection":
        return [(i, True) for i in payload.get("selected", [])] + [
            (i, False) for i in payload.get("rejected", [])
        ]
    if row.kind == "label":
        if not payload.get("items"):
            stats["labels_without_items"] += 1
        return [(i, True) for i in payload.get("items") or []]
    # thumb: about the first item of a ranking
    shown = shown_item_ids(interaction.output) if interaction is not None else None
    if not shown:
        stats["thumbs_without_ranking"] += 1
        return []
    return [(shown[0], payload.get("value") == "up")]


def _interactions(
    session: Session, project_id: int, ids: set[str | None]
) -> dict[str, Interaction]:
    wanted = sorted(i for i in ids if i)
    found: dict[str, Interaction] = {}
    for start in range(0, len(wanted), _CHUNK):
        query = select(Interaction).where(
            Interaction.project_id == project_id,
            Interaction.id.in_(wanted[start : start + _CHUNK]),
        )
        found.update({row.id: row for row in session.scalars(query)})
    return found


def _known_items(
    session: Session,
    project_id: int,
    rows: list[Feedback],
    interactions: dict[str, Interaction],
) -> set[str]:
    named: set[str] = set()
    for row in rows:
        for key in ("selected", "rejected", "items"):
            named.update(row.payload.get(key) or [])
    for interaction in interactions.values():
        named.update((shown_item_ids(interaction.output) or [])[:1])
    wanted = sorted(named)
    known: set[str] = set()
    for start in range(0, len(wanted), _CHUNK):
        known.update(
            session.scalars(
                select(Item.item_id).where(
                    Item.project_id == project_id, Item.item_id.in_(wanted[start : start + _CHUNK])
                )
            )
        )
    return known


def merge_positives(signals: list[Signal]) -> Iterator[Example]:
    """One example per identical (query, item): feedback ids merged, the highest score kept."""
    merged: dict[tuple[str, str], Example] = {}
    for signal in signals:
        if not signal.positive:
            continue
        key = (signal.query, signal.item_id)
        example = merged.setdefault(key, Example(signal.query, signal.item_id, signal.strength))
        example.score = max(example.score, signal.strength)
        example.feedback_ids.add(signal.feedback_id)
    yield from merged.values()
