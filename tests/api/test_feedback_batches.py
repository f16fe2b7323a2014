"""Feedback batches are all or nothing; idempotency keys make retries store nothing new."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fineloop.store import Store
from fineloop.store.schema import Feedback

SHOWN = ["reset", "refund", "shipping", "invoice"]  # in rank order


def log_ranking(client: TestClient, project: str, interaction_id: str = "call-1") -> str:
    output = {"items": [{"id": item, "score": 1 - n / 10} for n, item in enumerate(SHOWN)]}
    response = client.post(
        f"/v1/projects/{project}/interactions",
        json={"id": interaction_id, "input": "how do I reset my password", "output": output},
    )
    assert response.status_code == 201, response.text
    return interaction_id


def send(client: TestClient, project: str, event: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/v1/projects/{project}/feedback", json=event)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def send_batch_body(
    client: TestClient, project: str, events: list[dict[str, Any]]
) -> dict[str, Any]:
    response = client.post(f"/v1/projects/{project}/feedback/batch", json={"events": events})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def stored_count(store: Store) -> int:
    with store.read() as session:
        return session.scalar(select(func.count()).select_from(Feedback)) or 0


ON_THE_RANKING = "call-1"


def test_a_valid_batch_stores_every_event_and_returns_ids_in_order(
    client: TestClient, store: Store, project: str
) -> None:
    log_ranking(client, project)
    events: list[dict[str, Any]] = [
        {"kind": "thumb", "value": "up", "interaction_id": ON_THE_RANKING, "user_id": "u0"},
        {"kind": "rating", "value": 2, "interaction_id": ON_THE_RANKING, "user_id": "u1"},
        {
            "kind": "selection",
            "selected": ["refund"],
            "interaction_id": ON_THE_RANKING,
            "user_id": "u2",
        },
        {"kind": "label", "label": "billing", "input": "my invoice", "user_id": "u3"},
        {"kind": "preference", "chosen": "a", "rejected": "b", "user_id": "u4"},
    ]

    response = client.post(f"/v1/projects/{project}/feedback/batch", json={"events": events})

    assert response.status_code == 201
    body = response.json()
    assert (body["created"], body["duplicates"]) == (5, 0)
    assert body["ids"] == sorted(body["ids"])
    assert stored_count(store) == 5
    for position, feedback_id in enumerate(body["ids"]):
        stored = client.get(f"/v1/projects/{project}/feedback/{feedback_id}").json()
        assert (stored["kind"], stored["user_id"]) == (events[position]["kind"], f"u{position}")


def hundred_thumbs() -> list[dict[str, Any]]:
    return [{"kind": "thumb", "value": "up", "input": f"q{n}"} for n in range(100)]


def test_a_batch_with_malformed_rows_names_exactly_those_rows_and_stores_nothing(
    client: TestClient, store: Store, project: str
) -> None:
    events = hundred_thumbs()
    events[7]["value"] = "sideways"
    events[42] = {"kind": "rating", "input": "q42"}  # no value

    response = client.post(f"/v1/projects/{project}/feedback/batch", json={"events": events})

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_rows"
    assert [(r["row"], r["field"]) for r in body["invalid_rows"]] == [(7, "value"), (42, "value")]
    assert "nothing was stored" in body["message"]
    assert stored_count(store) == 0


def test_a_batch_with_rows_the_store_rejects_names_exactly_those_rows_and_stores_nothing(
    client: TestClient, store: Store, project: str
) -> None:
    events = hundred_thumbs()
    events[7] = {"kind": "thumb", "value": "up", "interaction_id": "never-logged"}
    events[42] = {"kind": "rating", "value": 9, "input": "q42"}

    response = client.post(f"/v1/projects/{project}/feedback/batch", json={"events": events})

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_rows"
    assert [(r["row"], r["field"]) for r in body["invalid_rows"]] == [
        (7, "interaction_id"),
        (42, "value"),
    ]
    assert stored_count(store) == 0


def test_a_repeated_idempotency_key_returns_the_first_id_with_200(
    client: TestClient, store: Store, project: str
) -> None:
    url = f"/v1/projects/{project}/feedback"
    event = {"kind": "thumb", "value": "up", "input": "q", "idempotency_key": "click-1"}

    first = client.post(url, json=event)
    retry = client.post(url, json={**event, "value": "down"})

    assert first.status_code == 201 and first.json()["created"] is True
    assert retry.status_code == 200
    assert retry.json() == {"id": first.json()["id"], "created": False, "reward": 1.0}
    assert stored_count(store) == 1


def test_a_batch_repeating_an_earlier_key_returns_the_earlier_id(
    client: TestClient, store: Store, project: str
) -> None:
    earlier = send(
        client, project, {"kind": "thumb", "value": "up", "input": "q", "idempotency_key": "k1"}
    )

    response = client.post(
        f"/v1/projects/{project}/feedback/batch",
        json={
            "events": [
                {"kind": "thumb", "value": "up", "input": "q", "idempotency_key": "k1"},
                {"kind": "thumb", "value": "down", "input": "q", "idempotency_key": "k2"},
            ]
        },
    )

    body = response.json()
    assert body["ids"][0] == earlier["id"]
    assert body["ids"][1] != earlier["id"]
    assert (body["created"], body["duplicates"]) == (1, 1)
    assert stored_count(store) == 2


def test_the_same_key_twice_in_one_batch_is_stored_once(
    client: TestClient, store: Store, project: str
) -> None:
    event = {"kind": "rating", "value": 5, "input": "q", "idempotency_key": "twice"}

    body = send_batch_body(client, project, [event, event, {**event, "idempotency_key": "once"}])

    assert body["ids"][0] == body["ids"][1] != body["ids"][2]
    assert (body["created"], body["duplicates"]) == (2, 1)
    assert stored_count(store) == 2


def test_a_batch_retried_as_a_whole_stores_nothing_new(
    client: TestClient, store: Store, project: str
) -> None:
    events = [
        {"kind": "thumb", "value": "up", "input": f"q{n}", "idempotency_key": f"k{n}"}
        for n in range(10)
    ]

    first = send_batch_body(client, project, events)
    retry = send_batch_body(client, project, events)

    assert retry["ids"] == first["ids"]
    assert (retry["created"], retry["duplicates"]) == (0, 10)
    assert stored_count(store) == 10


def test_idempotency_keys_are_per_project(client: TestClient, store: Store, project: str) -> None:
    client.post("/v1/projects", json={"name": "other", "task": "fake"})
    event = {"kind": "thumb", "value": "up", "input": "q", "idempotency_key": "same"}

    mine = send(client, project, event)
    theirs = send(client, "other", event)

    assert mine["id"] != theirs["id"]
    assert theirs["created"] is True
    assert stored_count(store) == 2
