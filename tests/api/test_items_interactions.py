"""Items (the catalog a retrieval model ranks) and interactions (what the model showed)."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from fineloop.store import Store
from fineloop.store.schema import Interaction, Item


def count(store: Store, model: type[Item] | type[Interaction]) -> int:
    with store.read() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_items_are_inserted_then_updated_by_id(
    client: TestClient, store: Store, project: str
) -> None:
    first = client.put(
        f"/v1/projects/{project}/items",
        json={
            "items": [
                {"id": "reset", "text": "How to reset a password", "metadata": {"lang": "en"}},
                {"id": "refund", "text": "Refund policy"},
            ]
        },
    )
    second = client.put(
        f"/v1/projects/{project}/items",
        json={"items": [{"id": "reset", "text": "Resetting your password", "metadata": {}}]},
    )

    assert first.json() == {"upserted": 2}
    assert second.json() == {"upserted": 1}
    assert count(store, Item) == 2
    reset = client.get(f"/v1/projects/{project}/items/reset").json()
    assert (reset["text"], reset["metadata"]) == ("Resetting your password", {})
    assert client.get(f"/v1/projects/{project}/items/refund").json()["text"] == "Refund policy"


def test_the_last_duplicate_in_one_request_wins(
    client: TestClient, store: Store, project: str
) -> None:
    response = client.put(
        f"/v1/projects/{project}/items",
        json={"items": [{"id": "a", "text": "first"}, {"id": "a", "text": "second"}]},
    )

    assert response.json() == {"upserted": 1}
    assert count(store, Item) == 1
    assert client.get(f"/v1/projects/{project}/items/a").json()["text"] == "second"


def test_item_pages_follow_next_cursor_to_the_end(client: TestClient, project: str) -> None:
    ids = [f"doc-{n:02d}" for n in range(25)]
    client.put(f"/v1/projects/{project}/items", json={"items": [{"id": i, "text": i} for i in ids]})

    seen: list[str] = []
    sizes: list[int] = []
    params: dict[str, int] = {"limit": 10}
    while True:
        page = client.get(f"/v1/projects/{project}/items", params=params).json()
        seen += [item["id"] for item in page["items"]]
        sizes.append(len(page["items"]))
        if page["next_cursor"] is None:
            break
        params["after"] = page["next_cursor"]

    assert sizes == [10, 10, 5]
    assert seen == ids


def test_unknown_item_is_404(client: TestClient, project: str) -> None:
    response = client.get(f"/v1/projects/{project}/items/missing")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert "missing" in response.json()["message"]


def test_items_of_an_unknown_project_are_404(client: TestClient) -> None:
    response = client.put("/v1/projects/nope/items", json={"items": [{"id": "a", "text": "t"}]})

    assert response.status_code == 404


def test_an_interaction_without_an_id_gets_a_generated_one(
    client: TestClient, project: str
) -> None:
    shown = {"items": [{"id": "reset", "score": 0.9}, {"id": "refund", "score": 0.4}]}
    response = client.post(
        f"/v1/projects/{project}/interactions",
        json={"input": "forgot password", "output": shown, "model_version": "v1", "latency_ms": 12},
    )

    assert response.status_code == 201
    new_id = response.json()["id"]
    assert re.fullmatch(r"[0-9a-f]{32}", new_id)
    stored = client.get(f"/v1/projects/{project}/interactions/{new_id}").json()
    assert (stored["input"], stored["output"]) == ("forgot password", shown)
    assert (stored["model_version"], stored["latency_ms"]) == ("v1", 12)


def test_logging_the_same_id_twice_keeps_one_row_and_the_first_record(
    client: TestClient, store: Store, project: str
) -> None:
    first = client.post(
        f"/v1/projects/{project}/interactions", json={"id": "call-1", "input": "q", "output": "a"}
    )
    again = client.post(
        f"/v1/projects/{project}/interactions",
        json={"id": "call-1", "input": "q", "output": "retried"},
    )

    assert first.json() == again.json() == {"id": "call-1"}
    assert count(store, Interaction) == 1
    assert client.get(f"/v1/projects/{project}/interactions/call-1").json()["output"] == "a"


def test_a_batch_returns_ids_in_order_and_lists_back(
    client: TestClient, store: Store, project: str
) -> None:
    batch = [
        {"id": "b-1", "input": "one", "output": "1", "created_at": "2024-03-01T10:00:00Z"},
        {"input": "two", "output": "2", "created_at": "2024-03-01T11:00:00Z"},
        {"id": "b-3", "input": "three", "output": "3", "created_at": "2024-03-01T12:00:00Z"},
    ]

    response = client.post(
        f"/v1/projects/{project}/interactions/batch", json={"interactions": batch}
    )

    assert response.status_code == 201
    ids = response.json()["ids"]
    assert ids[0] == "b-1" and ids[2] == "b-3" and len(ids[1]) == 32
    assert count(store, Interaction) == 3
    listed = client.get(f"/v1/projects/{project}/interactions").json()
    assert [i["id"] for i in listed] == list(reversed(ids))  # newest first
    older = client.get(
        f"/v1/projects/{project}/interactions",
        params={"before": "2024-03-01T12:00:00Z", "limit": 1},
    ).json()
    assert [i["id"] for i in older] == [ids[1]]


def test_interaction_ids_are_scoped_to_their_project(
    client: TestClient, store: Store, project: str
) -> None:
    client.post("/v1/projects", json={"name": "other", "task": "fake"})
    client.post("/v1/projects/other/interactions", json={"id": "shared", "input": 1, "output": 2})

    response = client.post(
        f"/v1/projects/{project}/interactions", json={"id": "shared", "input": 3, "output": 4}
    )

    assert response.status_code == 201
    assert response.json() == {"id": "shared"}
    assert count(store, Interaction) == 2
    assert client.get(f"/v1/projects/{project}/interactions/shared").json()["output"] == 4
    assert client.get("/v1/projects/other/interactions/shared").json()["output"] == 2


def test_feedback_on_a_shared_id_lands_in_its_own_project(client: TestClient, project: str) -> None:
    client.post("/v1/projects", json={"name": "other", "task": "fake"})
    for name in (project, "other"):
        client.post(
            f"/v1/projects/{name}/interactions", json={"id": "shared", "input": 1, "output": 2}
        )

    client.post(
        f"/v1/projects/{project}/feedback",
        json={"kind": "thumb", "value": "up", "interaction_id": "shared"},
    )

    mine = client.get(f"/v1/projects/{project}/feedback", params={"interaction_id": "shared"})
    theirs = client.get("/v1/projects/other/feedback", params={"interaction_id": "shared"})
    assert len(mine.json()["items"]) == 1
    assert theirs.json()["items"] == []


def test_unknown_interaction_is_404(client: TestClient, project: str) -> None:
    response = client.get(f"/v1/projects/{project}/interactions/missing")

    assert response.status_code == 404
    assert response.json()["field"] == "interaction_id"
