"""Feedback over the REST API: six kinds, their rewards, batches, idempotency and listing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
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


def send_batch(client: TestClient, project: str, events: list[dict[str, Any]]) -> list[int]:
    response = client.post(f"/v1/projects/{project}/feedback/batch", json={"events": events})
    assert response.status_code == 201, response.text
    ids: list[int] = response.json()["ids"]
    return ids


def stored_count(store: Store) -> int:
    with store.read() as session:
        return session.scalar(select(func.count()).select_from(Feedback)) or 0


def set_policy(client: TestClient, project: str, **policy: Any) -> None:
    response = client.patch(f"/v1/projects/{project}", json={"reward_policy": policy})
    assert response.status_code == 200, response.text


def ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat()


ON_THE_RANKING = "call-1"
KINDS_AND_REWARDS = [
    ({"kind": "thumb", "value": "up"}, {"value": "up"}, 1.0),
    ({"kind": "thumb", "value": "down"}, {"value": "down"}, -1.0),
    ({"kind": "rating", "value": 1}, {"value": 1.0}, -1.0),
    ({"kind": "rating", "value": 4}, {"value": 4.0}, 0.5),
    ({"kind": "rating", "value": 5}, {"value": 5.0}, 1.0),
    (
        {"kind": "correction", "output": "Use the reset link"},
        {"output": "Use the reset link"},
        -0.5,
    ),
    (
        {"kind": "selection", "selected": ["refund"], "rejected": ["reset"]},
        {"selected": ["refund"], "rejected": ["reset"]},
        1.0,
    ),
    ({"kind": "selection", "rejected": SHOWN}, {"selected": [], "rejected": SHOWN}, -1.0),
    ({"kind": "label", "items": ["reset"]}, {"items": ["reset"]}, 1.0),
    ({"kind": "label", "label": "account"}, {"label": "account"}, 1.0),
    (
        {"kind": "label", "spans": [{"start": 14, "end": 22, "label": "THING"}]},
        {"spans": [{"start": 14, "end": 22, "label": "THING"}]},
        1.0,
    ),
]


@pytest.mark.parametrize(("event", "payload", "reward"), KINDS_AND_REWARDS)
def test_each_kind_is_stored_with_its_payload_and_default_reward(
    client: TestClient,
    project: str,
    event: dict[str, Any],
    payload: dict[str, Any],
    reward: float,
) -> None:
    log_ranking(client, project)

    ack = send(client, project, {**event, "interaction_id": ON_THE_RANKING, "user_id": "ana"})

    assert ack["created"] is True
    assert ack["reward"] == pytest.approx(reward)
    stored = client.get(f"/v1/projects/{project}/feedback/{ack['id']}").json()
    assert stored["kind"] == event["kind"]
    assert stored["payload"] == payload
    assert stored["reward"] == pytest.approx(reward)
    assert (stored["interaction_id"], stored["user_id"]) == (ON_THE_RANKING, "ana")


def test_a_preference_between_two_texts_needs_no_interaction(
    client: TestClient, project: str
) -> None:
    ack = send(
        client,
        project,
        {"kind": "preference", "input": "Say hi", "chosen": "Hello!", "rejected": "Go away."},
    )

    stored = client.get(f"/v1/projects/{project}/feedback/{ack['id']}").json()
    assert stored["payload"] == {"chosen": "Hello!", "rejected": "Go away."}
    assert (stored["input"], stored["reward"]) == ("Say hi", 1.0)


def test_a_preference_between_two_logged_interactions(client: TestClient, project: str) -> None:
    for call in ("answer-a", "answer-b"):
        client.post(
            f"/v1/projects/{project}/interactions", json={"id": call, "input": "q", "output": call}
        )

    ack = send(
        client,
        project,
        {
            "kind": "preference",
            "chosen_interaction_id": "answer-b",
            "rejected_interaction_id": "answer-a",
        },
    )

    stored = client.get(f"/v1/projects/{project}/feedback/{ack['id']}").json()
    assert stored["payload"] == {
        "chosen_interaction_id": "answer-b",
        "rejected_interaction_id": "answer-a",
    }
    assert ack["reward"] == 1.0


@pytest.mark.parametrize(
    ("picked", "difficulty", "reward"),
    [("invoice", 1.0, 1.0), ("reset", 0.0, 0.5), ("refund", 1 / 3, 1 - 0.5 * 2 / 3)],
)
def test_difficulty_weight_keeps_hard_picks_whole_and_scales_easy_ones(
    client: TestClient, project: str, picked: str, difficulty: float, reward: float
) -> None:
    set_policy(client, project, difficulty_weight=0.5)
    log_ranking(client, project)

    ack = send(
        client,
        project,
        {"kind": "selection", "interaction_id": ON_THE_RANKING, "selected": [picked]},
    )

    stored = client.get(f"/v1/projects/{project}/feedback/{ack['id']}").json()
    assert stored["difficulty"] == pytest.approx(difficulty)
    assert stored["reward"] == pytest.approx(reward)


def test_a_difficulty_sent_with_the_event_scales_any_kind(client: TestClient, project: str) -> None:
    set_policy(client, project, difficulty_weight=0.5)

    easy = send(client, project, {"kind": "thumb", "value": "up", "input": "q", "difficulty": 0})
    hard = send(client, project, {"kind": "thumb", "value": "down", "input": "q", "difficulty": 1})

    assert (easy["reward"], hard["reward"]) == (0.5, -1.0)


def test_without_difficulty_weight_an_easy_pick_counts_whole(
    client: TestClient, project: str
) -> None:
    log_ranking(client, project)

    ack = send(
        client,
        project,
        {"kind": "selection", "interaction_id": ON_THE_RANKING, "selected": ["reset"]},
    )

    assert ack["reward"] == 1.0


def test_an_event_one_half_life_old_counts_half(client: TestClient, project: str) -> None:
    set_policy(client, project, half_life_days=30)

    fresh = send(client, project, {"kind": "thumb", "value": "up", "input": "q"})
    old = send(
        client, project, {"kind": "thumb", "value": "up", "input": "q", "timestamp": ago(30)}
    )

    by_id = {
        row["id"]: row for row in client.get(f"/v1/projects/{project}/feedback").json()["items"]
    }
    assert by_id[old["id"]]["reward"] == 1.0  # stored undecayed
    assert by_id[old["id"]]["effective_reward"] == pytest.approx(0.5, abs=1e-4)
    assert by_id[fresh["id"]]["effective_reward"] == pytest.approx(1.0, abs=1e-4)


def test_decay_can_be_turned_off(client: TestClient, project: str) -> None:
    set_policy(client, project, half_life_days=None)

    old = send(
        client, project, {"kind": "thumb", "value": "up", "input": "q", "timestamp": ago(3650)}
    )

    stored = client.get(f"/v1/projects/{project}/feedback/{old['id']}").json()
    assert stored["effective_reward"] == 1.0


def test_quality_threshold_decides_what_is_trainable(client: TestClient, project: str) -> None:
    set_policy(client, project, quality_threshold=0.3, half_life_days=30)
    events = {
        "fresh up": ({"kind": "thumb", "value": "up"}, True),
        "faded up": ({"kind": "thumb", "value": "up", "timestamp": ago(120)}, False),
        "neutral rating": ({"kind": "rating", "value": 3}, False),
        "good rating": ({"kind": "rating", "value": 4}, True),
        "correction": ({"kind": "correction", "output": "fixed"}, True),
    }
    ids = {
        name: send(client, project, {**e, "input": "q"})["id"] for name, (e, _) in events.items()
    }

    trainable = client.get(f"/v1/projects/{project}/feedback", params={"trainable": True}).json()
    untrainable = client.get(f"/v1/projects/{project}/feedback", params={"trainable": False})

    expected = {ids[name] for name, (_, usable) in events.items() if usable}
    assert {row["id"] for row in trainable["items"]} == expected
    assert all(row["trainable"] for row in trainable["items"])
    assert {row["id"] for row in untrainable.json()["items"]} == set(ids.values()) - expected


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
    client.post("/v1/projects", json={"name": "other", "task": "generation"})
    event = {"kind": "thumb", "value": "up", "input": "q", "idempotency_key": "same"}

    mine = send(client, project, event)
    theirs = send(client, "other", event)

    assert mine["id"] != theirs["id"]
    assert theirs["created"] is True
    assert stored_count(store) == 2


def send_batch_body(
    client: TestClient, project: str, events: list[dict[str, Any]]
) -> dict[str, Any]:
    response = client.post(f"/v1/projects/{project}/feedback/batch", json={"events": events})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def five_events(client: TestClient, project: str) -> list[int]:
    """Five events over five days, two users, two interactions and a free-standing label."""
    for call in ("call-1", "call-2"):
        client.post(
            f"/v1/projects/{project}/interactions", json={"id": call, "input": "q", "output": "a"}
        )
    return send_batch(
        client,
        project,
        [
            {
                "kind": "thumb",
                "value": "up",
                "user_id": "alice",
                "interaction_id": "call-1",
                "timestamp": "2024-01-01T09:00:00Z",
            },
            {
                "kind": "thumb",
                "value": "down",
                "user_id": "bob",
                "interaction_id": "call-1",
                "timestamp": "2024-01-02T09:00:00Z",
            },
            {
                "kind": "rating",
                "value": 4,
                "user_id": "alice",
                "interaction_id": "call-2",
                "timestamp": "2024-01-03T09:00:00Z",
            },
            {
                "kind": "correction",
                "output": "b",
                "user_id": "bob",
                "interaction_id": "call-2",
                "timestamp": "2024-01-04T09:00:00Z",
            },
            {
                "kind": "label",
                "label": "faq",
                "input": "q",
                "user_id": "carol",
                "timestamp": "2024-01-05T09:00:00+02:00",
            },
        ],
    )


@pytest.mark.parametrize(
    ("params", "positions"),
    [
        ({}, [0, 1, 2, 3, 4]),
        ({"kind": "thumb"}, [0, 1]),
        ({"user_id": "alice"}, [0, 2]),
        ({"interaction_id": "call-2"}, [2, 3]),
        ({"since": "2024-01-02T09:00:00Z", "until": "2024-01-04T09:00:00Z"}, [1, 2]),
        ({"since": "2024-01-05T07:00:00Z"}, [4]),
        ({"until": "2024-01-02T00:00:00"}, [0]),  # naive means UTC
        ({"min_reward": 0.5}, [0, 2, 4]),
        ({"max_reward": -0.5}, [1, 3]),
        ({"kind": "thumb", "user_id": "bob"}, [1]),
        ({"user_id": "nobody"}, []),
    ],
)
def test_feedback_filters(
    client: TestClient,
    project: str,
    five_events: list[int],
    params: dict[str, Any],
    positions: list[int],
) -> None:
    response = client.get(f"/v1/projects/{project}/feedback", params=params)

    assert response.status_code == 200, response.text
    assert [row["id"] for row in response.json()["items"]] == [five_events[p] for p in positions]


def all_pages(client: TestClient, project: str, **params: Any) -> tuple[list[int], int]:
    ids: list[int] = []
    pages = 0
    cursor: int | None = 0
    while cursor is not None:
        page = client.get(
            f"/v1/projects/{project}/feedback", params={**params, "after": cursor}
        ).json()
        ids += [row["id"] for row in page["items"]]
        cursor = page["next_cursor"]
        pages += 1
    return ids, pages


def test_pages_cover_every_event_exactly_once(client: TestClient, project: str) -> None:
    ids = send_batch(
        client, project, [{"kind": "thumb", "value": "up", "input": f"q{n}"} for n in range(23)]
    )

    seen, pages = all_pages(client, project, limit=5)

    assert seen == ids
    assert pages == 5


@pytest.mark.parametrize(
    "ratings",
    [
        [5, 3, 5, 3, 5, 5, 5],  # with limit 4 the last page ends one row before the table does
        [5, 3, 5, 3, 5, 5, 5, 3, 3, 3, 5, 5, 3, 5],
    ],
)
def test_pages_of_trainable_events_cover_each_exactly_once(
    client: TestClient, project: str, ratings: list[int]
) -> None:
    # A rating of 3 is a reward of 0, below the quality threshold: such rows are skipped
    # after the SQL fetch, so pages and fetches do not line up.
    ids = send_batch(
        client, project, [{"kind": "rating", "value": v, "input": "q"} for v in ratings]
    )
    trainable = [i for i, v in zip(ids, ratings, strict=True) if v == 5]

    for limit in (1, 2, 3, 4, 5, 100):
        seen, _ = all_pages(client, project, trainable=True, limit=limit)
        assert seen == trainable, f"limit={limit}"
