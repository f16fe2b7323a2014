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

from sqlalchemy import insert, select
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
from fineloop.store.engine import dump_json
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
UNKNOWN_INTERACTION = "unknown interaction"  # may be journaled by another server: see below

# Events checked against what their interaction showed (its input and output are loaded).
_CHECKED_AGAINST_SHOWN = (SelectionEvent, LabelEvent, CorrectionEvent)


@dataclass(frozen=True)
class Stored:
    id: int
    created: bool
    reward: float


def ingest(session: Session, project: Project, events: Sequence[EventEnvelope]) -> list[Stored]:
    """Store `events` in the session's transaction; raise BatchRejected if any is invalid."""
    now = datetime.now(UTC)
    policy = policy_of(project)
    project_id, options = project.id, project.task_options or {}
    known = _known_keys(session, project_id, events)
    task = get_task(project.task)
    # Selections, labels and corrections are checked against what was shown; skip decoding
    # every other interaction, and look each id up once: those loaded in full exist.
    looked_at: set[str] = {
        e.interaction_id
        for e in events
        if isinstance(e, _CHECKED_AGAINST_SHOWN) and e.interaction_id is not None
    }
    shown = shown_interactions(session, project_id, looked_at)
    referenced = set(shown) | existing_interaction_ids(
        session, project_id, _referenced_interactions(events) - looked_at
    )
    # The ranking each interaction showed, read once per batch, not once per event.
    ranked = {key: shown_item_ids(output) for key, (_, output) in shown.items()}
    errors: list[RowError] = []
    rows: list[dict[str, Any]] = []
    row_of_event: list[int | str] = []  # index into `rows`, or an idempotency key seen before
    first_row_of_key: dict[str, int] = {}
    for index, event in enumerate(events):
        key = event.idempotency_key
        if key is not None and (key in known or key in first_row_of_key):
            row_of_event.append(key if key in known else first_row_of_key[key])
            continue
        problems = _check(event, policy, referenced, ranked, now)
        if not problems:
            anchor = shown.get(event.interaction_id) if event.interaction_id else None
            problems = task.check_feedback(options, event, anchor)
        if problems:
            errors += [RowError(index, field, message) for field, message in problems]
            row_of_event.append(-1)
            continue
        if key is not None:
            first_row_of_key[key] = len(rows)
        row_of_event.append(len(rows))
        rows.append(_row(project_id, event, policy, ranked, now))
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
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        feedback = table(Feedback)
        statement = insert(feedback).returning(feedback.c.id, sort_by_parameter_order=True)
        return list(session.execute(statement, rows).scalars())
    # SQLite cannot batch an ordered INSERT ... RETURNING, so one plain executemany it is,
    # of values already in their stored form: SQLAlchemy's per-value type processing
    # (JSON, UtcDateTime, DATETIME) cost three times the insert itself. The SQL goes through
    # the same connection and transaction, so errors (IntegrityError) are SQLAlchemy's.
    # The write transaction began IMMEDIATE and holds the database lock, so the rows got
    # consecutive rowids ending at last_insert_rowid().
    received = _sqlite_time(rows[0]["received_at"])
    connection.exec_driver_sql(_SQLITE_INSERT, [_sqlite_values(row, received) for row in rows])
    last: int = connection.exec_driver_sql("SELECT last_insert_rowid()").scalar_one()
    return list(range(last - len(rows) + 1, last + 1))


_COLUMNS = (
    "project_id", "interaction_id", "kind", "payload", "input", "user_id", "timestamp",
    "received_at", "idempotency_key", "difficulty", "reward", "metadata",
)  # fmt: skip
_SQLITE_INSERT = (
    f"INSERT INTO feedback ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
)


def _sqlite_values(row: dict[str, Any], received: str) -> tuple[Any, ...]:
    """A `_row` as SQLite stores it through the mapped types: JSON text from the engine's
    serializer (None as 'null', as the JSON type writes it) and UTC times as text."""
    stamp = row["timestamp"]
    return (
        row["project_id"],
        row["interaction_id"],
        row["kind"],
        dump_json(row["payload"]),
        dump_json(row["input"]),
        row["user_id"],
        received if stamp is row["received_at"] else _sqlite_time(stamp),
        received,
        row["idempotency_key"],
        row["difficulty"],
        row["reward"],
        dump_json(row["metadata"]),
    )


def _sqlite_time(moment: datetime) -> str:
    """What UtcDateTime writes on SQLite: the UTC moment, without offset, in SQLAlchemy's
    DATETIME storage format (which its reads parse back)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime given to the store; attach a timezone")
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    return utc.replace(tzinfo=None).isoformat(" ", "microseconds")


def _known_keys(
    session: Session, project_id: int, events: Sequence[EventEnvelope]
) -> dict[str, tuple[int, float]]:
    keys = list({e.idempotency_key for e in events if e.idempotency_key is not None})
    known: dict[str, tuple[int, float]] = {}
    f = table(Feedback)  # Core columns: the ORM's row handling costs more than the query
    for start in range(0, len(keys), _IN_CHUNK):
        rows = session.execute(
            select(f.c.idempotency_key, f.c.id, f.c.reward).where(
                f.c.project_id == project_id,
                f.c.idempotency_key.in_(keys[start : start + _IN_CHUNK]),
            )
        )
        known.update({key: (id_, reward) for key, id_, reward in rows})
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
    ranked: dict[str, list[str] | None],
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
            problems.append((field, f"{UNKNOWN_INTERACTION} {interaction_id!r} in this project"))
    needs_anchor = not isinstance(event, PreferenceEvent)
    if needs_anchor and event.interaction_id is None and event.input is None:
        problems.append(("interaction_id", "give the interaction_id, or the input it is about"))
    if isinstance(event, RatingEvent):
        scale = policy.rating_scale
        if not scale.min <= event.value <= scale.max:
            problems.append(
                ("value", f"rating {event.value:g} is off the scale {scale.min:g}..{scale.max:g}")
            )
    if isinstance(event, SelectionEvent) and event.interaction_id is not None:
        shown = ranked.get(event.interaction_id)
        if shown is not None:
            unseen = [i for i in event.selected + event.rejected if i not in shown]
            if unseen:
                problems.append(("selected", f"items not shown in interaction: {unseen[:5]}"))
    return problems


def _row(
    project_id: int,
    event: EventEnvelope,
    policy: RewardPolicy,
    ranked: dict[str, list[str] | None],
    now: datetime,
) -> dict[str, Any]:
    payload = payload_of(event)
    kind = payload_kind(event)
    difficulty = event.difficulty
    if difficulty is None and isinstance(event, SelectionEvent) and event.interaction_id:
        difficulty = _difficulty(event, ranked.get(event.interaction_id))
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
    return _difficulty(event, shown_item_ids(output))


def _difficulty(event: SelectionEvent, shown: list[str] | None) -> float | None:
    if not shown or not event.selected:
        return None
    last = max(1, len(shown) - 1)
    positions = [shown.index(item) / last for item in event.selected if item in shown]
    return sum(positions) / len(positions) if positions else None
