"""Ingest writes its rows past SQLAlchemy's column types on SQLite: the stored text must be
exactly what the mapped types write, and read back through them as the events said."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import TypeAdapter
from sqlalchemy import insert, select, text

from fineloop.errors import BatchRejected
from fineloop.feedback.events import FeedbackEvent
from fineloop.feedback.ingest import ingest
from fineloop.schemas import InteractionCreate, ProjectCreate
from fineloop.store import Store
from fineloop.store.interactions import log_interactions
from fineloop.store.projects import create_project
from fineloop.store.schema import Feedback, Project, table

EVENTS = TypeAdapter(list[FeedbackEvent])
SHOWN = ["reset", "refund", "shipping"]
COLUMNS = (
    "project_id, interaction_id, kind, payload, input, user_id, timestamp, received_at, "
    "idempotency_key, difficulty, reward, metadata"
)


def _events() -> list[Any]:
    return EVENTS.validate_python(
        [
            {
                "kind": "thumb",
                "value": "up",
                "interaction_id": "call-1",
                "idempotency_key": "k1",
                "timestamp": datetime(2026, 1, 1, tzinfo=UTC),  # microseconds written as 000000
            },
            {
                "kind": "rating",
                "value": 4,
                "interaction_id": "call-1",
                "timestamp": datetime(2026, 1, 2, 10, 0, 0, 7, tzinfo=timezone(timedelta(hours=5))),
                "metadata": {"client": "wéb", "nested": {"list": [1, 2.5, None, True]}},
            },
            {"kind": "selection", "interaction_id": "call-1", "selected": ["refund"]},
            {"kind": "label", "input": {"query": "où est ma commande"}, "label": "shipping"},
            {"kind": "preference", "input": "a prompt", "chosen": "yes", "rejected": "no"},
        ]
    )


def _project(store: Store) -> Project:
    with store.write() as session:
        found = create_project(session, ProjectCreate(name="faq", task="embedding"))
        output = {"items": [{"id": item, "score": 1.0} for item in SHOWN]}
        spec = InteractionCreate(id="call-1", input="reset my password", output=output)
        log_interactions(session, found.id, [spec])
        return found


def test_stored_text_is_what_the_mapped_types_write(store: Store) -> None:
    if store.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL inserts through the mapped types themselves")
    project = _project(store)
    with store.write() as session:
        stored = ingest(session, project, _events())
    feedback = table(Feedback)
    # Each row again through SQLAlchemy's Core insert (the mapped types at work), under a
    # key of its own: both copies must hold the same text in every other column.
    with store.write() as session:
        rows = [dict(row) for row in session.execute(select(feedback)).mappings()]
        for row in rows:
            row["idempotency_key"] = f"copy-{row.pop('id')}"
        session.execute(insert(feedback), rows)
    with store.read() as session:
        raw = session.execute(text(f"SELECT id, {COLUMNS} FROM feedback ORDER BY id")).all()
    fast = {row.id: row for row in raw[: len(stored)]}
    typed = {int(row.idempotency_key.removeprefix("copy-")): row for row in raw[len(stored) :]}
    assert set(fast) == set(typed) == {s.id for s in stored}
    for feedback_id, row in fast.items():
        other = typed[feedback_id]
        mine, theirs = row._asdict(), other._asdict()
        for differs in ("id", "idempotency_key"):
            mine.pop(differs), theirs.pop(differs)
        assert mine == theirs
    by_kind = {row.kind: row for row in fast.values()}
    assert by_kind["rating"].timestamp == "2026-01-02 05:00:00.000007"  # UTC, no offset
    assert by_kind["rating"].metadata == '{"client":"wéb","nested":{"list":[1,2.5,null,true]}}'
    assert by_kind["label"].input == '{"query":"où est ma commande"}'
    assert by_kind["thumb"].input == "null"  # the JSON type's None
    assert by_kind["thumb"].timestamp == "2026-01-01 00:00:00.000000"


def test_rows_read_back_as_sent_with_consecutive_ids(store: Store) -> None:
    project = _project(store)
    events = _events()
    with store.write() as session:
        stored = ingest(session, project, events)
    ids = [s.id for s in stored]
    assert ids == list(range(ids[0], ids[0] + len(events)))
    with store.read() as session:
        rows = {row.id: row for row in session.scalars(select(Feedback))}
    rating = rows[ids[1]]
    assert rating.timestamp == datetime(2026, 1, 2, 5, 0, 0, 7, tzinfo=UTC)
    assert rating.payload == {"value": 4.0}
    assert rating.feedback_metadata == {"client": "wéb", "nested": {"list": [1, 2.5, None, True]}}
    assert rows[ids[2]].difficulty == 0.5  # "refund" was ranked second of three
    assert rows[ids[3]].input == {"query": "où est ma commande"}
    assert rows[ids[0]].input is None
    assert rows[ids[0]].received_at == rows[ids[4]].received_at


def test_a_retried_batch_stores_nothing_and_a_bad_one_nothing_at_all(store: Store) -> None:
    project = _project(store)
    with store.write() as session:
        first = ingest(session, project, _events())
    with store.write() as session:
        again = ingest(session, project, _events()[:1])
    assert (again[0].id, again[0].created) == (first[0].id, False)
    bad = EVENTS.validate_python(
        [
            {"kind": "thumb", "value": "down", "interaction_id": "call-1", "idempotency_key": "n"},
            {"kind": "selection", "interaction_id": "call-1", "selected": ["never-shown"]},
        ]
    )
    with pytest.raises(BatchRejected), store.write() as session:
        ingest(session, project, bad)
    with store.read() as session:
        count = session.execute(text("SELECT count(*) FROM feedback")).scalar_one()
    assert count == len(first)
