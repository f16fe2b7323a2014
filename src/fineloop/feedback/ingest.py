"""Storing feedback: check every event against the store, then insert all or nothing.

Pydantic has already checked each event's shape. Here come the checks that need the
store — the interaction exists, the rating lies on the project's scale, the selected items
were shown — and idempotency: an event whose key was seen before returns the earlier id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from fineloop.errors import BatchRejected, RowError
from fineloop.feedback.events import (
    CorrectionEvent,
    EventEnvelope,
    LabelEvent,
    PreferenceEvent,
    RatingEvent,
    SelectionEvent,
    payload_of,
)
from fineloop.feedback.rewards import RewardPolicy, stored_reward
from fineloop.store.interactions import (
    existing_interaction_ids,
    shown_interactions,
    shown_item_ids,
)
from fineloop.store.projects import policy_of
from fineloop.store.schema import Feedback, Project, table
from fineloop.tasks import get_task

CLOCK_SKEW = timedelta(minutes=5)
_IN_CHUNK = 500


@dataclass(frozen=True)
class Stored:
    id: int
    created: bool
    reward: float


def ingest(session: Session, project: Project, events: Sequence[EventEnvelope]) -> list[Stored]:
    """Store `events` in the session's transaction; raise BatchRejected if any is invalid."""
    now = datetime.now(UTC)
    policy = policy_of(project)
    known = _known_keys(session, project.id, events)
    referenced = existing_interaction_ids(session, project.id, _referenced_interactions(events))
    task = get_task(project.task)
    # Selections, labels and corrections are checked against what was shown; skip decoding
    # every other interaction.
    looked_at: set[str] = {
        e.interaction_id
        for e in events
        if isinstance(e, SelectionEvent | LabelEvent | CorrectionEvent)
        and e.interaction_id is not None
    }
    shown = shown_interactions(session, project.id, looked_at & referenced)
    outputs = {interaction_id: output for interaction_id, (_, output) in shown.items()}
    errors: list[RowError] = []
    rows: list[dict[str, Any]] = []
    row_of_event: list[int | str] = []  # index into `rows`, or an idempotency key seen before
    first_row_of_key: dict[str, int] = {}
    for index, event in enumerate(events):
        key = event.idempotency_key
        if key is not None and (key in known or key in first_row_of_key):
            row_of_event.append(key if key in known else first_row_of_key[key])
            continue
        problems = _check(event, policy, referenced, outputs, now)
        if not problems:
            anchor = shown.get(event.interaction_id) if event.interaction_id else None
            problems = task.check_feedback(project.task_options or {}, event, anchor)
        if problems:
            errors += [RowError(index, field, message) for field, message in problems]
            row_of_event.append(-1)
            continue
        if key is not None:
            first_row_of_key[key] = len(rows)
        row_of_event.append(len(rows))
        rows.append(_row(project.id, event, policy, outputs, now))
    if errors:
        raise BatchRejected(errors, total=len(events))
    new_ids = _insert(session, rows)
    results: list[Stored] = []
    for ref in row_of_event:
        if isinstance(ref, str):
            earlier_id, earlier_reward = known[ref]
            results.append(Stored(earlier_id, False, earlier_reward))
        else:
            results.append(Stored(new_ids[ref], True, rows[ref]["reward"]))
    _mark_in_batch_duplicates(results)
    return results


def _mark_in_batch_duplicates(results: list[Stored]) -> None:
    seen: set[int] = set()
    for index, result in enumerate(results):
        if result.id in seen and result.created:
            results[index] = Stored(result.id, False, result.reward)
        seen.add(result.id)


def _insert(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    if not rows:
        return []
    feedback = table(Feedback)
    if session.get_bind().dialect.name != "sqlite":
        statement = insert(feedback).returning(feedback.c.id, sort_by_parameter_order=True)
        return list(session.execute(statement, rows).scalars())
    # SQLite cannot batch an ordered INSERT ... RETURNING, so one plain executemany it is.
    # The write transaction began IMMEDIATE and holds the database lock, so the rows got
    # consecutive rowids ending at last_insert_rowid().
    session.execute(insert(feedback), rows)
    last = session.execute(text("SELECT last_insert_rowid()")).scalar_one()
    return list(range(last - len(rows) + 1, last + 1))


def _known_keys(
    session: Session, project_id: int, events: Sequence[EventEnvelope]
) -> dict[str, tuple[int, float]]:
    keys = list({e.idempotency_key for e in events if e.idempotency_key is not None})
    known: dict[str, tuple[int, float]] = {}
    for start in range(0, len(keys), _IN_CHUNK):
        rows = session.execute(
            select(Feedback.idempotency_key, Feedback.id, Feedback.reward).where(
                Feedback.project_id == project_id,
                Feedback.idempotency_key.in_(keys[start : start + _IN_CHUNK]),
            )
        )
        known.update({row.idempotency_key: (row.id, row.reward) for row in rows})
    return known


def _referenced_interactions(events: Sequence[EventEnvelope]) -> set[str]:
    ids = {e.interaction_id for e in events if e.interaction_id}
    for event in events:
        if isinstance(event, PreferenceEvent):
            ids |= {i for i in (event.chosen_interaction_id, event.rejected_interaction_id) if i}
    return ids


def _check(
    event: EventEnvelope,
    policy: RewardPolicy,
    referenced: set[str],
    outputs: dict[str, Any],
    now: datetime,
) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if event.timestamp is not None and event.timestamp > now + CLOCK_SKEW:
        problems.append(("timestamp", "lies in the future; send the time the user acted"))
    references = [("interaction_id", event.interaction_id)]
    if isinstance(event, PreferenceEvent):
        references += [
            ("chosen_interaction_id", event.chosen_interaction_id),
            ("rejected_interaction_id", event.rejected_interaction_id),
        ]
    for field, interaction_id in references:
        if interaction_id and interaction_id not in referenced:
            problems.append((field, f"unknown interaction {interaction_id!r} in this project"))
    needs_anchor = not isinstance(event, PreferenceEvent)
    if needs_anchor and event.interaction_id is None and event.input is None:
        problems.append(("interaction_id", "give the interaction_id, or the input it is about"))
    if isinstance(event, RatingEvent):
        scale = policy.rating_scale
        if not scale.min <= event.value <= scale.max:
            problems.append(
                ("value", f"rating {event.value:g} is off the scale {scale.min:g}..{scale.max:g}")
            )
    if isinstance(event, SelectionEvent) and event.interaction_id in outputs:
        shown = shown_item_ids(outputs[event.interaction_id])
        if shown is not None:
            unseen = [i for i in event.selected + event.rejected if i not in set(shown)]
            if unseen:
                problems.append(("selected", f"items not shown in interaction: {unseen[:5]}"))
    return problems


def _row(
    project_id: int,
    event: EventEnvelope,
    policy: RewardPolicy,
    outputs: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    payload = payload_of(event)
    kind = payload_kind(event)
    difficulty = event.difficulty
    if difficulty is None and isinstance(event, SelectionEvent) and event.interaction_id:
        difficulty = selection_difficulty(event, outputs.get(event.interaction_id))
    return {
        "project_id": project_id,
        "interaction_id": event.interaction_id,
        "kind": kind,
        "payload": payload,
        "input": event.input,
        "user_id": event.user_id,
        "timestamp": event.timestamp or now,
        "received_at": now,
        "idempotency_key": event.idempotency_key,
        "difficulty": difficulty,
        "reward": stored_reward(policy, kind, payload, difficulty),
        "metadata": event.metadata,
    }


def payload_kind(event: EventEnvelope) -> str:
    kind = getattr(event, "kind", None)
    if not isinstance(kind, str):
        raise TypeError(f"{type(event).__name__} has no kind")
    return kind


def selection_difficulty(event: SelectionEvent, output: Any) -> float | None:
    """How far down the ranking the user had to go: 0 when every pick was ranked first."""
    shown = shown_item_ids(output)
    if not shown or not event.selected:
        return None
    last = max(1, len(shown) - 1)
    positions = [shown.index(item) / last for item in event.selected if item in shown]
    return sum(positions) / len(positions) if positions else None
