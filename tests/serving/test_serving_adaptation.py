"""Instant adaptation: feedback on similar queries changes results at once, and `select`
converges to the items users pick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from fineloop.tasks.embedding.serving.adapt import adapt, evidence
from fineloop.tasks.embedding.serving.memory import SOFT, Judged
from fineloop.tasks.embedding.serving.state import embedding_serving
from serving.helpers import ids, items, search

WALLS = [
    "wall",
    "a wall of the stair",
    "the wall with a window",
    "wall and column",
    "an wall on the roof",
]
OTHERS = [
    "door in the wall",
    "window in the wall",
    "door",
    "window",
    "floor",
    "roof",
    "stair",
    "column",
    "beam",
    "the floor of the stair",
    "roof beam",
    "stair column",
    "window and door",
    "floor beam",
    "the roof window",
    "column and beam",
    "door of the stair",
    "floor and roof",
    "window on the floor",
    "beam of the roof",
]
OBJECTS = [(f"obj-{n:02d}", text, {}) for n, text in enumerate(WALLS + OTHERS)]
RIGHT = {key for key, text, _ in OBJECTS if text in WALLS}
# "select the wall" and its paraphrases, all within the default min_similarity (0.75) of
# each other under the tiny model
ROUNDS = ["select the wall", "show all wall"]
LATER = ["find the wall", "select the wall"]


def building(client: TestClient, tiny_model: Path, **policy: Any) -> str:
    response = client.post(
        "/v1/projects",
        json={
            "name": "bim",
            "task": "embedding",
            "base_model": str(tiny_model),
            "serving_policy": policy,
        },
    )
    assert response.status_code == 201, response.text
    client.put("/v1/projects/bim/items", json={"items": items(OBJECTS)})
    return "bim"


def select(client: TestClient, project: str, query: str, **extra: Any) -> dict[str, Any]:
    response = client.post(f"/v1/projects/{project}/select", json={"query": query, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def answer(client: TestClient, project: str, body: dict[str, Any]) -> None:
    """The user keeps the right items among the candidates and says nothing else."""
    picks = [key for key in ids(body, "candidates") if key in RIGHT]
    response = client.post(
        f"/v1/projects/{project}/feedback",
        json={"kind": "selection", "interaction_id": body["interaction_id"], "selected": picks},
    )
    assert response.status_code == 201, response.text


def test_select_returns_exactly_the_right_set_after_two_rounds(
    client: TestClient, tiny_model: Path
) -> None:
    project = building(client, tiny_model)
    first = select(client, project, ROUNDS[0])
    assert set(ids(first)) != RIGHT  # the base model alone gets it wrong
    assert len(ids(first)) > len(RIGHT)

    answer(client, project, first)
    answer(client, project, select(client, project, ROUNDS[1]))

    for query in LATER:
        body = select(client, project, query)
        assert set(ids(body)) == RIGHT, query
        assert body["adapted"] is True
        assert all(c["selected"] == (c["id"] in RIGHT) for c in body["candidates"])


def test_switched_off_feedback_changes_nothing(client: TestClient, tiny_model: Path) -> None:
    project = building(client, tiny_model, online_adaptation=False)
    first = select(client, project, ROUNDS[0])

    answer(client, project, first)
    answer(client, project, select(client, project, ROUNDS[1]))
    again = select(client, project, ROUNDS[0])

    assert again["adapted"] is False
    order = ids(again, "candidates")
    assert order == ids(first, "candidates")[: len(order)]  # still ranked by cosine alone


def test_a_pick_lower_down_rises_to_the_top_of_search(client: TestClient, catalog: str) -> None:
    before = search(client, catalog, "reset my password", k=9)
    picked, dropped = ids(before)[3], ids(before)[0]

    client.post(
        f"/v1/projects/{catalog}/feedback",
        json={
            "kind": "selection",
            "interaction_id": before["interaction_id"],
            "selected": [picked],
            "rejected": [dropped],
        },
    )
    after = search(client, catalog, "reset my password", k=9)

    assert ids(after)[0] == picked
    assert ids(after).index(dropped) > 1
    assert after["adapted"] is True


def test_a_label_without_interaction_boosts_its_items(client: TestClient, catalog: str) -> None:
    before = ids(search(client, catalog, "where is my bill", k=9))
    wanted = before[-2:]

    client.post(
        f"/v1/projects/{catalog}/feedback",
        json={"kind": "label", "input": "where is my bill", "items": wanted},
    )

    assert set(ids(search(client, catalog, "where is my bill", k=2))) == set(wanted)


def test_older_feedback_counts_less(client: TestClient, catalog: str) -> None:
    body = search(client, catalog, "refund for a payment", k=9)
    fresh, old = ids(body)[5], ids(body)[6]
    for item, age in ((fresh, 0), (old, 60)):
        when = (datetime.now(UTC) - timedelta(days=age)).isoformat()
        client.post(
            f"/v1/projects/{catalog}/feedback",
            json={"kind": "label", "input": "refund payment", "items": [item], "timestamp": when},
        )
    serving = embedding_serving(client.app)
    served = serving.hub.serve(catalog)
    query = serving.predictor(served.version).encode(["refund payment"])[0]

    votes = evidence(served.resource.memory, query, served.project.policy)

    # half-life 30 days: 60 days old counts a quarter
    assert votes[old] / votes[fresh] == pytest.approx(0.25, rel=1e-3)


def test_adapt_moves_only_items_with_evidence() -> None:
    p = np.array([0.99, 0.2, 0.6])
    moved = adapt(p, np.array([-1.0, 1.0, 0.0]), strength=4.0)

    assert moved[0] < 0.5 < moved[1]  # a confident model is overruled by one judgement
    assert moved[2] == 0.6


@pytest.mark.parametrize(
    ("picks", "final", "expected"),
    [
        # the user answered with the final set: dropped proposals are rejections
        ({"a": 1.0}, True, {"a": 1.0, "b": -1.0, "c": -SOFT}),
        # rejections only: kept proposals count as soft picks
        ({"b": -1.0}, False, {"a": SOFT, "b": -1.0, "c": -SOFT}),
    ],
)
def test_select_answers_label_every_candidate(
    picks: dict[str, float], final: bool, expected: dict[str, float]
) -> None:
    judged = Judged(key="i", query="q", mode="select", shown=["a", "b", "c"], proposed={"a", "b"})
    judged.picks, judged.final_given = picks, final

    judged.relabel()

    assert judged.labels == expected


def test_search_answers_label_only_what_was_named() -> None:
    judged = Judged(key="i", query="q", mode="search", shown=["a", "b", "c"])
    judged.picks = {"b": 1.0}

    judged.relabel()

    assert judged.labels == {"b": 1.0}
