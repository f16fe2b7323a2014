"""Projects over the REST API: one use case each, with its task and reward policy."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from fineloop.store import Store
from fineloop.store.schema import Feedback


def stored_rewards(store: Store) -> dict[int, float]:
    with store.read() as session:
        return {row.id: row.reward for row in session.execute(select(Feedback.id, Feedback.reward))}


def test_create_returns_the_project_with_the_default_reward_policy(client: TestClient) -> None:
    response = client.post(
        "/v1/projects",
        json={"name": "support-bot", "task": "fake", "description": "Answers tickets"},
    )

    assert response.status_code == 201
    body = response.json()
    assert (body["name"], body["task"], body["description"]) == (
        "support-bot",
        "fake",
        "Answers tickets",
    )
    assert body["base_model"] is None
    policy = body["reward_policy"]
    assert (policy["thumb_up"], policy["thumb_down"], policy["correction"]) == (1.0, -1.0, -0.5)
    assert policy["rating_scale"] == {"min": 1.0, "max": 5.0}


def test_projects_are_listed_by_name_and_fetched_one_by_one(client: TestClient) -> None:
    for name, task in [("search", "embedding"), ("chat", "fake"), ("entities", "fake-loss")]:
        assert client.post("/v1/projects", json={"name": name, "task": task}).status_code == 201

    listed = client.get("/v1/projects").json()
    one = client.get("/v1/projects/entities").json()

    assert [p["name"] for p in listed] == ["chat", "entities", "search"]
    assert one["task"] == "fake-loss"


def test_unknown_project_is_404(client: TestClient) -> None:
    response = client.get("/v1/projects/nope")

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert "nope" in response.json()["message"]


def test_patch_changes_only_the_fields_sent(client: TestClient, project: str) -> None:
    client.patch(f"/v1/projects/{project}", json={"description": "FAQ search"})
    response = client.patch(f"/v1/projects/{project}", json={"base_model": "BAAI/bge-small-en"})

    assert response.status_code == 200
    stored = client.get(f"/v1/projects/{project}").json()
    assert stored["description"] == "FAQ search"
    assert stored["base_model"] == "BAAI/bge-small-en"
    assert stored["task"] == "embedding"


def test_a_second_project_with_the_same_name_is_a_conflict(
    client: TestClient, project: str
) -> None:
    response = client.post("/v1/projects", json={"name": project, "task": "fake"})

    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert response.json()["field"] == "name"
    assert [p["task"] for p in client.get("/v1/projects").json()] == ["embedding"]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"name": "Has Spaces", "task": "embedding"}, "name"),
        ({"name": "-leading-dash", "task": "embedding"}, "name"),
        ({"name": "x" * 65, "task": "embedding"}, "name"),
        ({"name": "vision", "task": "image-captioning"}, "task"),
        ({"name": "vision"}, "task"),
        ({"name": "ok", "task": "embedding", "colour": "blue"}, "colour"),
        ({"name": "ok", "task": "embedding", "reward_policy": {"thumb_up": 2}}, "thumb_up"),
    ],
)
def test_invalid_project_specs_are_422_naming_the_field(
    client: TestClient, spec: dict[str, object], field: str
) -> None:
    response = client.post("/v1/projects", json=spec)

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid"
    assert field in body["message"]
    assert body["errors"][0]["field"].endswith(field)
    assert client.get("/v1/projects").json() == []


def test_a_new_thumb_reward_rewrites_the_stored_reward_of_past_events(
    client: TestClient, store: Store, project: str
) -> None:
    up = client.post(
        f"/v1/projects/{project}/feedback", json={"kind": "thumb", "value": "up", "input": "q"}
    ).json()
    down = client.post(
        f"/v1/projects/{project}/feedback", json={"kind": "thumb", "value": "down", "input": "q"}
    ).json()
    assert stored_rewards(store) == {up["id"]: 1.0, down["id"]: -1.0}

    response = client.patch(
        f"/v1/projects/{project}", json={"reward_policy": {"thumb_up": 0.5, "thumb_down": -0.25}}
    )

    assert response.status_code == 200
    assert response.json()["reward_policy"]["thumb_up"] == 0.5
    assert stored_rewards(store) == {up["id"]: 0.5, down["id"]: -0.25}
    assert client.get(f"/v1/projects/{project}/feedback/{up['id']}").json()["reward"] == 0.5


def test_a_new_rating_scale_remaps_stored_ratings(
    client: TestClient, store: Store, project: str
) -> None:
    ids = {
        value: client.post(
            f"/v1/projects/{project}/feedback",
            json={"kind": "rating", "value": value, "input": "q"},
        ).json()["id"]
        for value in (1, 3, 5)
    }
    assert stored_rewards(store) == {ids[1]: -1.0, ids[3]: 0.0, ids[5]: 1.0}

    client.patch(
        f"/v1/projects/{project}", json={"reward_policy": {"rating_scale": {"min": 0, "max": 10}}}
    )

    rewards = stored_rewards(store)
    assert rewards[ids[1]] == pytest.approx(-0.8)
    assert rewards[ids[3]] == pytest.approx(-0.4)
    assert rewards[ids[5]] == pytest.approx(0.0)


def test_patching_the_description_leaves_stored_rewards_alone(
    client: TestClient, store: Store, project: str
) -> None:
    client.patch(f"/v1/projects/{project}", json={"reward_policy": {"thumb_up": 0.5}})
    client.post(
        f"/v1/projects/{project}/feedback", json={"kind": "thumb", "value": "up", "input": "q"}
    )

    client.patch(f"/v1/projects/{project}", json={"description": "still half a point"})

    assert list(stored_rewards(store).values()) == [0.5]
    assert client.get(f"/v1/projects/{project}").json()["reward_policy"]["thumb_up"] == 0.5


def test_a_task_family_that_is_not_installed_is_a_422_naming_the_installed_ones(
    client: TestClient,
) -> None:
    response = client.post("/v1/projects", json={"name": "chat", "task": "detection"})

    assert response.status_code == 422
    message = response.json()["message"]
    assert "'detection' is installed" in message or "no task 'detection'" in message
    assert "embedding" in message and "generation" in message
    assert "fake" in message  # the test plugins count too
    assert client.get("/v1/projects").json() == []


def test_task_options_are_validated_by_the_task_and_stored(client: TestClient) -> None:
    missing = client.post("/v1/projects", json={"name": "n0", "task": "ner"})
    assert missing.status_code == 422, missing.text
    assert missing.json()["field"] == "task_options.entity_types"
    duplicated = {"entity_types": ["EQUIPMENT", "equipment"]}
    answer = client.post(
        "/v1/projects", json={"name": "n1", "task": "ner", "task_options": duplicated}
    )
    assert answer.status_code == 422 and "unique" in answer.json()["message"], answer.text
    options = {"entity_types": ["EQUIPMENT", "MEASURE"]}
    created = client.post(
        "/v1/projects", json={"name": "n2", "task": "ner", "task_options": options}
    )
    assert created.status_code == 201, created.text
    assert created.json()["task_options"] == options | {"labelling": "first"}
    changed = client.patch(
        "/v1/projects/n2", json={"task_options": {"entity_types": ["EQUIPMENT", "STANDARD"]}}
    )
    assert changed.status_code == 200, changed.text
    assert client.get("/v1/projects/n2").json()["task_options"]["entity_types"] == [
        "EQUIPMENT",
        "STANDARD",
    ]
    refused = client.post(
        "/v1/projects", json={"name": "e1", "task": "embedding", "task_options": {"x": 1}}
    )
    assert refused.status_code == 422 and refused.json()["field"] == "task_options"
