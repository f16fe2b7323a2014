"""The review queue: interactions without feedback, ranked so the most useful review comes
first. The interactions are written by hand with known scores, so each expected order
follows from the ranking's definition (embedding: a ranking's doubt is the normalised
entropy of the softmax of its shown cosines at MNRL's scale 20, computed here with numpy;
a select call's is 1 - the distance of the nearest top-3 probability to its threshold)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

START = datetime(2026, 1, 1, tzinfo=UTC)


def ranking(scores: list[float], **extra: Any) -> dict[str, Any]:
    """A search output as embedding serving stores it: items in rank order."""
    items = [
        {"id": f"doc{i}", "score": s, "probability": round(1 - 0.1 * i, 2), "rank": i + 1}
        for i, s in enumerate(scores)
    ]
    return {"mode": "search", "items": items, **extra}


def entropy(scores: list[float]) -> float:
    """The normalised entropy of softmax(20 * scores)."""
    z = 20 * np.asarray(scores)
    p = np.exp(z - z.max())
    p /= p.sum()
    return float(-(p * np.log(p)).sum() / np.log(len(scores)))


SELECT = {
    "mode": "select",
    "threshold": 0.8,
    "items": [{"id": "doc0", "score": 0.9, "probability": 0.79}, {"id": "doc1", "score": 0.2}],
}

# (id, output, expected uncertainty score); created in this order, one minute apart.
SHOWN: list[tuple[str, dict[str, Any], float | None]] = [
    ("sure", ranking([0.9, 0.5, 0.4]), entropy([0.9, 0.5, 0.4])),  # one clear winner
    ("near", ranking([0.71, 0.70, 0.3]), entropy([0.71, 0.70, 0.3])),  # a two-way tie
    ("flat", ranking([0.6, 0.6, 0.6, 0.6]), 1.0),  # no idea at all
    # select applied its own threshold, 0.8: 0.79 is 0.01 from it
    ("own-threshold", SELECT, 0.99),
    # logged with probabilities only: the nearest to the project's threshold, 0.5
    ("probabilities", {"items": [{"id": "doc0", "probability": 0.52}]}, 0.98),
    ("middling", ranking([0.8, 0.7, 0.6]), entropy([0.8, 0.7, 0.6])),
    ("no-ranking", {"text": "not a ranking"}, None),  # newest, yet last: nothing to score
]
BY_UNCERTAINTY = [
    "flat",
    "own-threshold",
    "probabilities",
    "near",
    "middling",
    "sure",
    "no-ranking",
]


def log(client: TestClient, project: str, rows: list[dict[str, Any]]) -> None:
    response = client.post(
        f"/v1/projects/{project}/interactions/batch", json={"interactions": rows}
    )
    assert response.status_code == 201, response.text


@pytest.fixture
def queued(client: TestClient, project: str) -> str:
    log(
        client,
        project,
        [
            {
                "id": name,
                "input": f"query {name}",
                "output": output,
                "model_version": "v1",
                "created_at": (START + timedelta(minutes=i)).isoformat(),
            }
            for i, (name, output, _) in enumerate(SHOWN)
        ],
    )
    return project


def queue(client: TestClient, project: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"/v1/projects/{project}/review", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def ids(page: dict[str, Any]) -> list[str]:
    return [item["interaction"]["id"] for item in page["items"]]


def test_the_default_policy_ranks_by_uncertainty_most_uncertain_first(
    client: TestClient, queued: str
) -> None:
    page = queue(client, queued)
    assert page["ranking"] == "uncertainty" and page["task"] == "embedding"
    assert ids(page) == BY_UNCERTAINTY
    expected = {name: score for name, _, score in SHOWN}
    assert {i["interaction"]["id"]: i["score"] for i in page["items"]} == pytest.approx(
        expected, abs=1e-6
    )  # rounded to 6 places
    reasons = {i["interaction"]["id"]: i["reason"] for i in page["items"]}
    assert reasons["near"] == "uncertainty" and reasons["no-ranking"] == "recent"
    assert page["items"][1]["interaction"]["output"] == SELECT  # what was shown
    assert page["ranked"] == len(SHOWN) and page["next_offset"] is None and not page["more"]


def test_pages_follow_next_offset_through_the_whole_order(client: TestClient, queued: str) -> None:
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = queue(client, queued, limit=3, offset=offset)
        assert len(page["items"]) <= 3
        seen += ids(page)
        offset = page["next_offset"]
    assert seen == BY_UNCERTAINTY


def test_the_ranking_parameter_overrides_the_policy(client: TestClient, queued: str) -> None:
    assert ids(queue(client, queued, ranking="recent")) == [name for name, *_ in SHOWN][::-1]
    shuffled = ids(queue(client, queued, ranking="random"))
    assert sorted(shuffled) == sorted(BY_UNCERTAINTY)
    assert ids(queue(client, queued, ranking="random")) == shuffled  # stable across calls
    assert {i["reason"] for i in queue(client, queued, ranking="random")["items"]} == {"random"}


def test_the_project_policy_sets_ranking_and_page_size(client: TestClient, queued: str) -> None:
    response = client.patch(
        f"/v1/projects/{queued}", json={"review_policy": {"ranking": "recent", "limit": 2}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["review_policy"] == {"ranking": "recent", "limit": 2, "scan": 5000}
    page = queue(client, queued)
    assert page["ranking"] == "recent" and ids(page) == ["no-ranking", "middling"]
    assert page["next_offset"] == 2


def test_an_interaction_with_feedback_leaves_the_queue(client: TestClient, queued: str) -> None:
    event = {
        "kind": "selection",
        "interaction_id": "near",
        "selected": ["doc0"],
        "idempotency_key": "review:near:1",
    }
    assert client.post(f"/v1/projects/{queued}/feedback", json=event).status_code == 201
    assert ids(queue(client, queued)) == [n for n in BY_UNCERTAINTY if n != "near"]
    thumb = {"kind": "thumb", "interaction_id": "no-ranking", "value": "down"}
    assert client.post(f"/v1/projects/{queued}/feedback", json=thumb).status_code == 201
    assert "no-ranking" not in ids(queue(client, queued))


def test_disagreement_puts_inputs_two_versions_answered_differently_first(
    client: TestClient, queued: str
) -> None:
    """During a rollout the challenger answered two of the inputs again: one with another
    top-1 item (a disagreement, queued first whatever its uncertainty), one the same."""
    log(
        client,
        queued,
        [
            {  # the champion's top-1 for "query sure" was doc0; the challenger's is doc1
                "id": "sure-v2",
                "input": "query sure",
                "output": {"items": [{"id": "doc1", "score": 0.8, "probability": 0.97}]},
                "model_version": "v2",
                "variant": "challenger",
                "created_at": (START + timedelta(hours=1)).isoformat(),
            },
            {  # same top-1 as the champion: no disagreement
                "id": "middling-v2",
                "input": "query middling",
                "output": {"items": [{"id": "doc0", "score": 0.8, "probability": 0.97}]},
                "model_version": "v2",
                "variant": "challenger",
                "created_at": (START + timedelta(hours=1)).isoformat(),
            },
        ],
    )
    page = queue(client, queued, ranking="disagreement")
    order = ids(page)
    assert set(order[:2]) == {"sure", "sure-v2"}
    # both disagree; then by uncertainty: 1 - |0.97 - 0.5| = 0.53 for the one-item output,
    # far above the clear winner's entropy
    assert order[:2] == ["sure-v2", "sure"]
    first = page["items"][0]
    assert first["reason"] == "disagreement" and first["disagrees_with"] == ["v1"]
    assert page["items"][1]["disagrees_with"] == ["v2"]
    rest = [i for i in order[2:] if i != "middling-v2"]
    assert rest == [n for n in BY_UNCERTAINTY if n != "sure"]
    middling = next(i for i in page["items"] if i["interaction"]["id"] == "middling")
    assert middling["reason"] == "uncertainty" and middling["disagrees_with"] == []


def test_the_queue_of_a_project_without_interactions_is_empty(
    client: TestClient, project: str
) -> None:
    page = queue(client, project)
    assert page["items"] == [] and page["next_offset"] is None and page["ranked"] == 0


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"limit": "many"},
        {"offset": -1},
        {"ranking": "loudest"},
    ],
)
def test_bad_parameters_are_a_422_naming_the_parameter(
    client: TestClient, project: str, params: dict[str, Any]
) -> None:
    response = client.get(f"/v1/projects/{project}/review", params=params)
    assert response.status_code == 422, response.text
    assert next(iter(params)) in response.text


def test_a_bad_review_policy_is_a_422(client: TestClient, project: str) -> None:
    for policy in ({"ranking": "loudest"}, {"limit": 501}, {"limit": 10, "colour": "red"}):
        response = client.patch(f"/v1/projects/{project}", json={"review_policy": policy})
        assert response.status_code == 422, (policy, response.text)


def test_an_unknown_project_is_a_404(client: TestClient) -> None:
    response = client.get("/v1/projects/nope/review")
    assert response.status_code == 404 and "nope" in response.text


def test_ner_ranks_by_its_least_confident_span_and_generation_by_recency(
    client: TestClient,
) -> None:
    """The queue asks the family: NER's uncertainty is 1 - the least span score shown (a
    text with no span has none); a generation reply stores no probabilities, so its
    interactions come newest first."""
    spec = {"name": "tags", "task": "ner", "task_options": {"entity_types": ["PUMP"]}}
    assert client.post("/v1/projects", json=spec).status_code == 201

    def spans(*scores: float) -> dict[str, Any]:
        return {"spans": [{"start": 0, "end": 4, "label": "PUMP", "score": s} for s in scores]}

    ner = [("confident", spans(0.99, 0.97)), ("doubtful", spans(0.95, 0.41)), ("none", spans())]
    log(
        client,
        "tags",
        [
            {"id": n, "input": {"text": f"P-10 {n}"}, "output": o, "created_at": START.isoformat()}
            for n, o in ner
        ],
    )
    page = queue(client, "tags")
    assert ids(page) == ["doubtful", "confident", "none"]
    assert [i["score"] for i in page["items"]] == pytest.approx([0.59, 0.03, None])

    assert (
        client.post("/v1/projects", json={"name": "bot", "task": "generation"}).status_code == 201
    )
    log(
        client,
        "bot",
        [
            {
                "id": f"reply{i}",
                "input": {"messages": [{"role": "user", "content": f"q{i}"}]},
                "output": {"text": f"a{i}", "finish_reason": "stop"},
                "created_at": (START + timedelta(minutes=i)).isoformat(),
            }
            for i in range(3)
        ],
    )
    page = queue(client, "bot")
    assert ids(page) == ["reply2", "reply1", "reply0"]
    assert {(i["score"], i["reason"]) for i in page["items"]} == {(None, "recent")}
