"""A preference between an output and itself teaches nothing: refused at the edge (422),
whether the sides are given inline or as interactions."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def project(client: TestClient) -> str:
    assert client.post("/v1/projects", json={"name": "p", "task": "embedding"}).is_success
    return "p"


@pytest.mark.parametrize(
    "sides",
    [
        {"chosen": "Same text.", "rejected": "Same text."},
        {"chosen": {"text": "x"}, "rejected": {"text": "x"}},
        {"chosen_interaction_id": "i1", "rejected_interaction_id": "i1"},
    ],
)
def test_identical_sides_are_refused_and_nothing_is_stored(
    client: TestClient, project: str, sides: dict[str, object]
) -> None:
    event = {"kind": "preference", "input": "a prompt", **sides}
    refused = client.post(f"/v1/projects/{project}/feedback", json=event)
    assert refused.status_code == 422, refused.text
    assert "chosen and rejected are the same" in refused.json()["message"]
    assert client.get(f"/v1/projects/{project}/feedback").json()["items"] == []


def test_different_sides_are_taken(client: TestClient, project: str) -> None:
    event = {"kind": "preference", "input": "a prompt", "chosen": "Yes.", "rejected": "No."}
    assert client.post(f"/v1/projects/{project}/feedback", json=event).is_success
