"""A served embedding project on the tiny model with a second version, v1, to roll out.

v1 is a copy of the tiny model, so both variants rank alike: what tells them apart in these
tests is the feedback each variant's interactions receive, which the tests write by hand."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fineloop.registry.versions import register_version
from fineloop.serving import get_serving
from fineloop.store import Store
from fineloop.store.projects import get_project
from serving.helpers import CATALOG, items

PROJECT = "shop"
PASSED = {"passed": True, "reason": "ndcg@10: lower bound above margin", "metric": "ndcg@10"}
FAILED = {"passed": False, "reason": "ndcg@10: lower bound not above margin", "metric": "ndcg@10"}

StartRollout = Callable[..., dict[str, Any]]


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


@pytest.fixture
def shop(client: TestClient, tiny_model: Path) -> str:
    """Project shop: the catalog, served once (so v0 is the champion and serving is up)."""
    ok(
        client.post(
            "/v1/projects",
            json={"name": PROJECT, "task": "embedding", "base_model": str(tiny_model)},
        ),
        201,
    )
    ok(client.put(f"/v1/projects/{PROJECT}/items", json={"items": items(CATALOG)}))
    assert search(client, "refund")["model_version"] == "v0"
    return PROJECT


def add_version(store: Store, model: Path, gate: dict[str, Any] | None) -> str:
    with store.write() as session:
        found = get_project(session, PROJECT)
        version = register_version(
            session, found, artifact_uri=str(model), base_model=str(model), gate=gate or {}
        )
        return f"v{version.number}"


@pytest.fixture
def start_rollout(
    client: TestClient, shop: str, store: Store, tiny_model: Path, tmp_path: Path
) -> StartRollout:
    """Register v1 (with the given gate result) and start champion vs v1, index built."""

    def start(
        weights: tuple[float, float] = (0.5, 0.5),
        gate: dict[str, Any] | None = None,
        **policy: Any,
    ) -> dict[str, Any]:
        copy = shutil.copytree(tiny_model, tmp_path / f"v{len(list(tmp_path.glob('v*'))) + 1}")
        label = add_version(store, Path(copy), gate)
        body: dict[str, Any] = {
            "variants": [
                {"name": "champion", "target": "champion", "weight": weights[0]},
                {"name": "challenger", "target": label, "weight": weights[1]},
            ]
        }
        if policy:
            body["policy"] = policy
        started = ok(client.put(f"/v1/projects/{PROJECT}/rollout", json=body))
        get_serving(client.app).background.join()  # the challenger's index is built
        return dict(started)

    return start


def search(client: TestClient, query: str, **extra: Any) -> dict[str, Any]:
    return dict(ok(client.post(f"/v1/projects/{PROJECT}/search", json={"query": query, **extra})))


def interaction(client: TestClient, interaction_id: str) -> dict[str, Any]:
    return dict(ok(client.get(f"/v1/projects/{PROJECT}/interactions/{interaction_id}")))


def rollout(client: TestClient) -> dict[str, Any]:
    return dict(ok(client.get(f"/v1/projects/{PROJECT}/rollout")))


def traffic(client: TestClient, users: int, prefix: str = "u") -> list[dict[str, Any]]:
    """One search per user, each with its own user id."""
    return [search(client, "reset my password", user_id=f"{prefix}{i}") for i in range(users)]


def pick(client: TestClient, answer: dict[str, Any], *, top: bool) -> float:
    """The user picks the item shown at rank 1 (`top`), or the one at rank 2; the reward."""
    chosen = answer["items"][0 if top else 1]["id"]
    event = {"kind": "selection", "interaction_id": answer["interaction_id"], "selected": [chosen]}
    return float(ok(client.post(f"/v1/projects/{PROJECT}/feedback", json=event), 201)["reward"])


def thumb(client: TestClient, answer: dict[str, Any], up: bool) -> float:
    event = {
        "kind": "thumb",
        "interaction_id": answer["interaction_id"],
        "value": "up" if up else "down",
    }
    return float(ok(client.post(f"/v1/projects/{PROJECT}/feedback", json=event), 201)["reward"])
