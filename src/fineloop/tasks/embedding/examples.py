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

from fineloop.data.records import FeedbackRecord, ProjectData

KINDS = ("selection", "thumb", "label")


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


def harvest(data: ProjectData, *, max_query_chars: int) -> Harvest:
    """The project's feedback as signals. Decay was applied as of the newest feedback (by
    the reader), so rebuilding later over the same feedback yields the same snapshot."""
    stats: Counter[str] = Counter()
    if not data.watermark:
        return Harvest([], 0, None, stats)
    records = [r for r in data.feedback if r.kind in KINDS]
    stats["events_read"] = len(records)
    catalog = data.item_ids()
    signals: list[Signal] = []
    for record in records:
        if not record.trainable:
            stats["events_untrainable"] += 1
            continue
        interaction = record.interaction
        query = query_text(record.input, max_query_chars)
        if query is None and interaction is not None:
            query = query_text(interaction.input, max_query_chars)
        if query is None:
            stats["events_without_query"] += 1
            continue
        judged = _judgments(record, stats)
        if not judged:
            continue
        if any(item_id not in catalog for item_id, _ in judged):
            stats["events_with_unknown_items"] += 1
            continue
        group = group_of(record.metadata)
        if group is None and interaction is not None:
            group = group_of(interaction.metadata)
        strength = min(1.0, abs(record.effective_reward))
        shown = interaction.shown_item_ids if interaction is not None else None
        signals += [
            Signal(record.id, query, group, item_id, positive, strength, rank)
            for item_id, positive, rank in _ranked(judged, shown or [])
        ]
        stats["events_used"] += 1
    return Harvest(signals, data.watermark, data.as_of, stats)


def _ranked(judged: list[tuple[str, bool]], shown: list[str]) -> Iterator[tuple[str, bool, int]]:
    """Each judgment with its item's rank among those shown; an item that was not shown
    ranks after every shown one, in the order the event lists it."""
    at = {item_id: rank for rank, item_id in reversed(list(enumerate(shown)))}
    for position, (item_id, positive) in enumerate(judged):
        yield item_id, positive, at.get(item_id, len(shown) + position)


def _judgments(record: FeedbackRecord, stats: Counter[str]) -> list[tuple[str, bool]]:
    """(item id, is positive) pairs an event states."""
    payload = record.payload
    if record.kind == "selection":
        return [(i, True) for i in payload.get("selected", [])] + [
            (i, False) for i in payload.get("rejected", [])
        ]
    if record.kind == "label":
        if not payload.get("items"):
            stats["labels_without_items"] += 1
        return [(i, True) for i in payload.get("items") or []]
    # thumb: about the first item of a ranking
    shown = record.interaction.shown_item_ids if record.interaction is not None else None
    if not shown:
        stats["thumbs_without_ranking"] += 1
        return []
    return [(shown[0], payload.get("value") == "up")]


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
