"""select: the items whose probability reaches the threshold, at most `max`, and the
candidates a UI shows (logged as the interaction's shown items)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from serving.helpers import CATALOG, ids


def select(client: TestClient, project: str, query: str, **extra: Any) -> dict[str, Any]:
    response = client.post(f"/v1/projects/{project}/select", json={"query": query, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_threshold_and_max_decide_the_selection(client: TestClient, catalog: str) -> None:
    everything = select(client, catalog, "my account", threshold=0.0)
    two = select(client, catalog, "my account", threshold=0.0, max=2)
    none = select(client, catalog, "my account", threshold=1.0)

    assert len(everything["items"]) == len(CATALOG) and everything["threshold"] == 0.0
    assert ids(two) == ids(everything)[:2]
    assert [c["id"] for c in two["candidates"] if c["selected"]] == ids(two)
    assert len(two["candidates"]) == len(CATALOG)  # max(2 x 2, 20), capped by the catalog
    assert none["items"] == [] and len(none["candidates"]) == len(CATALOG)
    probabilities = [c["probability"] for c in everything["candidates"]]
    assert probabilities == sorted(probabilities, reverse=True)


def test_the_default_threshold_is_the_projects(client: TestClient, catalog: str) -> None:
    assert select(client, catalog, "my account")["threshold"] == 0.5
    client.patch(f"/v1/projects/{catalog}", json={"serving_policy": {"select_threshold": 0.95}})
    strict = select(client, catalog, "my account")
    client.patch(f"/v1/projects/{catalog}", json={"serving_policy": {"select_threshold": 0.0}})
    lenient = select(client, catalog, "my account")

    assert strict["threshold"] == 0.95 and lenient["threshold"] == 0.0
    assert len(lenient["items"]) == len(CATALOG) > len(strict["items"])


def test_candidates_are_the_logged_shown_items_and_can_be_picked(
    client: TestClient, catalog: str
) -> None:
    body = select(client, catalog, "my account", threshold=0.0, max=1)
    missed = next(c["id"] for c in body["candidates"] if not c["selected"])

    logged = client.get(f"/v1/projects/{catalog}/interactions/{body['interaction_id']}").json()
    picked = client.post(
        f"/v1/projects/{catalog}/feedback",
        json={"kind": "selection", "interaction_id": body["interaction_id"], "selected": [missed]},
    )

    assert logged["output"]["mode"] == "select"
    assert logged["output"]["selected"] == ids(body)
    assert [(s["id"], s["selected"]) for s in logged["output"]["items"]] == [
        (c["id"], c["selected"]) for c in body["candidates"]
    ]
    assert picked.status_code == 201


def test_select_validates_its_request(client: TestClient, catalog: str) -> None:
    for body in ({"query": "x", "threshold": 1.5}, {"query": "x", "max": 0}, {"query": ""}):
        response = client.post(f"/v1/projects/{catalog}/select", json=body)
        assert response.status_code == 422, body
    filtered = select(client, catalog, "my account", threshold=0.0, filters={"section": "team"})
    assert ids(filtered) == ["invite"]
