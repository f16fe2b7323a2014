"""The shared serving plumbing serves a plugin family it knows nothing about: the fake
task's one route gets the champion, a named version and rollout variants, each logged with
its version and variant, and a new champion loads while the old one keeps answering."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from jobs_fake_task import make_model

from fineloop.config import Settings
from fineloop.registry.manage import promote
from fineloop.registry.versions import register_version
from fineloop.serving import champion_changed, get_serving
from fineloop.store import Store
from fineloop.store.projects import get_project

ROUTE = "/v1/projects/scores/fake/score"


def _project(client: TestClient, tmp_path: Path) -> None:
    base = make_model(tmp_path / "base", 0.5)
    body = {"name": "scores", "task": "fake", "base_model": str(base)}
    assert client.post("/v1/projects", json=body).status_code == 201


def _version(store: Store, tmp_path: Path, skill: float, number: int) -> str:
    folder = make_model(tmp_path / f"v{number}", skill)
    with store.write() as session:
        version = register_version(
            session,
            get_project(session, "scores"),
            artifact_uri=str(folder),
            base_model=str(folder),
            gate={},
        )
        return f"v{version.number}"


def _score(client: TestClient, **body: Any) -> dict[str, Any]:
    answer = client.post(ROUTE, json={"query": "query number 1", **body})
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_champion_named_version_and_rollout_variant(
    client: TestClient, store: Store, tmp_path: Path
) -> None:
    _project(client, tmp_path)
    first = _score(client)
    assert first["model_version"] == "v0" and first["variant"] is None
    label = _version(store, tmp_path, 0.9, 1)

    named = _score(client, version=label)
    assert named["model_version"] == label and named["score"] > first["score"]

    variants = [
        {"name": "control", "target": "champion", "weight": 0},
        {"name": "better", "target": label, "weight": 1},
    ]
    put = client.put("/v1/projects/scores/rollout", json={"variants": variants})
    assert put.is_success, put.text
    routed = _score(client, user_id="u1")
    assert routed["variant"] == "better" and routed["model_version"] == label
    logged = client.get(f"/v1/projects/scores/interactions/{routed['interaction_id']}").json()
    assert logged["variant"] == "better" and logged["model_version"] == label
    assert logged["metadata"]["rollout"]["assigned"] == "better"


def test_a_new_champion_loads_while_the_old_one_answers(
    client: TestClient, store: Store, settings: Settings, tmp_path: Path
) -> None:
    _project(client, tmp_path)
    assert _score(client)["model_version"] == "v0"
    label = _version(store, tmp_path, 0.9, 1)
    hub = get_serving(client.app)
    gate = threading.Event()
    hub.models.loader.submit(lambda: gate.wait(30))  # hold the loader: v1 must queue
    with store.write() as session:
        promote(session, get_project(session, "scores"), label, force=True)
    during = _score(client)
    gate.set()
    hub.models.loader.join()
    after = _score(client)
    assert during["model_version"] == "v0"  # no request waited for v1's load
    assert after["model_version"] == label


def test_a_route_refuses_projects_of_another_task(client: TestClient, tmp_path: Path) -> None:
    _project(client, tmp_path)
    wrong = client.post("/v1/projects/scores/fake-loss/score", json={"query": "query number 1"})
    assert wrong.status_code == 422
    assert "'fake' project" in wrong.json()["message"]
    champion_changed(client.app, "scores")  # a hook on a served family: no error
