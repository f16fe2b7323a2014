"""What the API, the CLI and importers do, each in one transaction of the store."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError

from fineloop.errors import BatchRejected
from fineloop.feedback.events import EventEnvelope
from fineloop.feedback.ingest import UNKNOWN_INTERACTION, Stored, ingest
from fineloop.schemas import InteractionCreate, ItemIn
from fineloop.store import Store
from fineloop.store.interactions import log_interactions
from fineloop.store.items import upsert_items
from fineloop.store.projects import get_project


def store_feedback(
    store: Store,
    project: str,
    events: Sequence[EventEnvelope],
    *,
    late_interactions_wait: float = 0.0,
) -> list[Stored]:
    """Store a batch all-or-nothing. A concurrent writer that used the same idempotency key
    first makes the insert fail; the retry then finds its row and returns that id. An event
    on an interaction this store does not hold yet is tried once more after
    `late_interactions_wait` seconds: another server may have journaled it a moment ago."""
    waited = late_interactions_wait <= 0
    attempt = 0
    while True:
        try:
            with store.write() as session:
                return ingest(session, get_project(session, project), events)
        except IntegrityError:
            attempt += 1
            if attempt == 3:
                raise
        except BatchRejected as rejected:
            if waited or not any(
                error.message.startswith(UNKNOWN_INTERACTION) for error in rejected.errors
            ):
                raise
            waited = True
            time.sleep(late_interactions_wait)


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
