"""Feedback over the REST API: the six kinds, their payloads and the rewards they earn."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

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
    events: dict[str, tuple[dict[str, Any], bool]] = {
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
