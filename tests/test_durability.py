"""Durability: an acknowledged event is stored, even if the server dies right after the 2xx.

The server is a real `fineloop serve` process killed with SIGKILL: no shutdown hooks, no
flush. The store is then opened directly, and a new server on the same data answers retries
of the same idempotency keys with the first ids.
"""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from conftest import LiveServer
from fineloop.config import Settings
from fineloop.store import Store
from fineloop.store.schema import Feedback

BATCH: list[dict[str, Any]] = [
    {"kind": "thumb", "value": "down", "input": "where is my parcel?", "idempotency_key": "b-0"},
    {"kind": "rating", "value": 4, "input": "reset password", "idempotency_key": "b-1"},
    {"kind": "label", "input": "refund please", "label": "billing", "idempotency_key": "b-2"},
]
SINGLE: dict[str, Any] = {
    "kind": "thumb",
    "value": "up",
    "interaction_id": "chat-1",
    "idempotency_key": "s-0",
}


def _post_everything(url: str) -> dict[str, int]:
    """Post one event and one batch; return the acknowledged id of each idempotency key."""
    base = f"{url}/v1/projects/durable"
    with httpx.Client(timeout=30) as http:
        created = http.post(f"{url}/v1/projects", json={"name": "durable", "task": "fake"})
        assert created.status_code == 201, created.text
        response = http.post(
            f"{base}/interactions", json={"id": "chat-1", "input": "hi", "output": "hello"}
        )
        assert response.status_code == 201, response.text
        single = http.post(f"{base}/feedback", json=SINGLE)
        assert single.status_code == 201, single.text
        batch = http.post(f"{base}/feedback/batch", json={"events": BATCH})
        assert batch.status_code == 201, batch.text
    ids = {"s-0": single.json()["id"]}
    ids.update({e["idempotency_key"]: i for e, i in zip(BATCH, batch.json()["ids"], strict=True)})
    return ids


def _stored(settings: Settings) -> list[tuple[str | None, int]]:
    """Every feedback row in the store, as (idempotency key, id), opened without a server."""
    store = Store.open(settings)
    try:
        with store.read() as session:
            rows = session.execute(
                select(Feedback.idempotency_key, Feedback.id).order_by(Feedback.id)
            ).all()
    finally:
        store.close()
    return [(key, feedback_id) for key, feedback_id in rows]


def test_acknowledged_events_survive_sigkill(live_server: LiveServer, settings: Settings) -> None:
    acknowledged = _post_everything(live_server.url)
    live_server.kill()
    assert live_server.process.returncode == -9
    assert _stored(settings) == sorted(acknowledged.items(), key=lambda pair: pair[1])


def test_retries_after_a_crash_return_the_first_ids(
    live_server: LiveServer, settings: Settings
) -> None:
    acknowledged = _post_everything(live_server.url)
    live_server.kill()
    restarted = LiveServer(settings)
    try:
        base = f"{restarted.url}/v1/projects/durable/feedback"
        with httpx.Client(timeout=30) as http:
            single = http.post(base, json=SINGLE)
            batch = http.post(f"{base}/batch", json={"events": BATCH})
    finally:
        restarted.stop()
    assert single.status_code == 200  # seen before: not created again
    assert single.json()["id"] == acknowledged["s-0"]
    assert single.json()["created"] is False
    assert batch.status_code == 201
    assert batch.json()["ids"] == [acknowledged[e["idempotency_key"]] for e in BATCH]
    assert (batch.json()["created"], batch.json()["duplicates"]) == (0, len(BATCH))
    # no duplicates: still exactly one row per acknowledged event
    assert _stored(settings) == sorted(acknowledged.items(), key=lambda pair: pair[1])
