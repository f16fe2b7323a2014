"""What the API, the CLI and importers do, each in one transaction of the store."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError

from fineloop.feedback.events import EventEnvelope
from fineloop.feedback.ingest import Stored, ingest
from fineloop.schemas import InteractionCreate, ItemIn
from fineloop.store import Store
from fineloop.store.interactions import log_interactions
from fineloop.store.items import upsert_items
from fineloop.store.projects import get_project


def store_feedback(store: Store, project: str, events: Sequence[EventEnvelope]) -> list[Stored]:
    """Store a batch all-or-nothing. A concurrent writer that used the same idempotency key
    first makes the insert fail; the retry then finds its row and returns that id."""
    for attempt in range(3):
        try:
            with store.write() as session:
                return ingest(session, get_project(session, project), events)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def store_interactions(
    store: Store, project: str, interactions: Sequence[InteractionCreate]
) -> list[str]:
    for attempt in range(3):
        try:
            with store.write() as session:
                project_id = get_project(session, project).id
                return log_interactions(session, project_id, interactions)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def store_items(store: Store, project: str, items: Sequence[ItemIn]) -> int:
    with store.write() as session:
        return upsert_items(session, get_project(session, project).id, items)
