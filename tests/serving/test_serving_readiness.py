"""No request waits on a long build: with serving_wait_seconds = 0 a search (or an
embeddings call) whose index or model is not ready answers 503 at once, with Retry-After
and the build's progress, and the same request answers 200 once the build is done.

The builds are held deterministically by a chore queued first on the worker that runs them
(`background` for indexes, `loader` for models): the real build runs when it is released.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fineloop.api.app import create_app
from fineloop.config import Settings
from fineloop.serving import get_serving
from fineloop.store import Store
from serving.helpers import CATALOG, items


@pytest.fixture
def impatient(settings: Settings, store: Store) -> Iterator[TestClient]:
    """An app whose requests never wait for a build (serving_wait_seconds = 0)."""
    quick = settings.model_copy(update={"serving_wait_seconds": 0.0})
    with TestClient(create_app(quick, store)) as client:
        yield client


@pytest.fixture
def shop(impatient: TestClient, tiny_model: Path) -> str:
    body = {"name": "shop", "task": "embedding", "base_model": str(tiny_model)}
    assert impatient.post("/v1/projects", json=body).status_code == 201
    response = impatient.put("/v1/projects/shop/items", json={"items": items(CATALOG)})
    assert response.status_code == 200, response.text
    return "shop"


def _held(worker_of: object, name: str) -> threading.Event:
    """Queue a chore that blocks the worker `name` until the returned event is set."""
    gate = threading.Event()
    getattr(worker_of, name).submit(lambda: gate.wait(30))
    return gate


def _not_ready(response: Any) -> dict[str, Any]:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    body: dict[str, Any] = response.json()
    return body


def test_search_answers_503_with_progress_then_200_after_the_build(
    impatient: TestClient, shop: str
) -> None:
    state = get_serving(impatient.app)
    gate = _held(state, "background")
    try:
        first = impatient.post(f"/v1/projects/{shop}/search", json={"query": "refund"})
        body = _not_ready(first)
        assert body["error"] == "not_ready"
        assert body["retry_after"] == int(first.headers["retry-after"])
        assert body["progress"]["version"] == "v0"
        assert body["progress"]["state"] == "queued"
        assert "retry after" in body["message"]

        status = impatient.get(f"/v1/projects/{shop}/index").json()
        assert status["champion"] == "v0" and status["serving"] is None
        assert [(v["version"], v["state"]) for v in status["versions"]] == [("v0", "queued")]
        # select and a named version wait on the same build
        _not_ready(impatient.post(f"/v1/projects/{shop}/select", json={"query": "refund"}))
        named = {"query": "refund", "version": "v0"}
        _not_ready(impatient.post(f"/v1/projects/{shop}/search", json=named))
    finally:
        gate.set()
    state.background.join()

    status = impatient.get(f"/v1/projects/{shop}/index").json()
    (built,) = status["versions"]
    assert built["state"] == "ready" and built["error"] is None
    assert built["items_indexed"] == built["items_total"] == len(CATALOG)
    assert built["progress"] == 1.0
    again = impatient.post(f"/v1/projects/{shop}/search", json={"query": "refund"})
    assert again.status_code == 200, again.text
    assert again.json()["items"][0]["id"] == "refund"
    assert impatient.get(f"/v1/projects/{shop}/index").json()["serving"] == "v0"


def test_post_index_starts_a_build_before_any_search(impatient: TestClient, shop: str) -> None:
    before = impatient.get(f"/v1/projects/{shop}/index").json()
    assert before["versions"] == [{"version": "v0", "state": "not_built", "progress": 0.0}]
    started = impatient.post(f"/v1/projects/{shop}/index")
    assert started.status_code == 202, started.text
    assert started.json()["versions"][0]["state"] in {"queued", "loading_model", "indexing"}
    get_serving(impatient.app).background.join()
    answer = impatient.post(f"/v1/projects/{shop}/search", json={"query": "lost card"})
    assert answer.status_code == 200, answer.text


def test_items_arriving_on_a_serving_server_start_the_new_projects_build(
    impatient: TestClient, shop: str, tiny_model: Path
) -> None:
    state = get_serving(impatient.app)
    impatient.post(f"/v1/projects/{shop}/index")
    state.background.join()
    body = {"name": "other", "task": "embedding", "base_model": str(tiny_model)}
    assert impatient.post("/v1/projects", json=body).status_code == 201
    impatient.put("/v1/projects/other/items", json={"items": items(CATALOG[:3])})
    state.background.join()  # no search was made: the upsert started it
    versions = impatient.get("/v1/projects/other/index").json()["versions"]
    assert versions[0]["state"] == "ready" and versions[0]["items_indexed"] == 3


def test_a_build_that_fails_after_the_503_reports_its_error_next(
    impatient: TestClient, tmp_path: Path
) -> None:
    broken = tmp_path / "not-a-model"  # under the models root, with no weights to load
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    body = {"name": "bad", "task": "embedding", "base_model": str(broken)}
    created = impatient.post("/v1/projects", json=body)
    assert created.status_code == 201, created.text
    impatient.put("/v1/projects/bad/items", json={"items": items(CATALOG[:2])})
    state = get_serving(impatient.app)
    gate = _held(state, "background")
    first = impatient.post("/v1/projects/bad/search", json={"query": "refund"})
    gate.set()
    _not_ready(first)
    state.background.join()
    failed = impatient.get("/v1/projects/bad/index").json()["versions"][0]
    assert failed["state"] == "failed" and failed["error"]
    second = impatient.post("/v1/projects/bad/search", json={"query": "refund"})
    assert second.status_code == 422, second.text  # the reason, not another 503
    assert "cannot load the model" in second.json()["message"]


def test_embeddings_answer_503_while_the_model_loads(impatient: TestClient, shop: str) -> None:
    state = get_serving(impatient.app)
    gate = _held(state.models, "loader")
    try:
        response = impatient.post("/v1/embeddings", json={"model": shop, "input": "refund"})
        assert response.status_code == 503, response.text
        assert int(response.headers["retry-after"]) >= 1
        error = response.json()["error"]  # OpenAI's shape, which its clients retry
        assert error["type"] == "server_error" and error["code"] == "not_ready"
        assert "loading model" in error["message"]
    finally:
        gate.set()
    state.models.loader.join()
    response = impatient.post("/v1/embeddings", json={"model": shop, "input": "refund"})
    assert response.status_code == 200, response.text
    assert len(response.json()["data"][0]["embedding"]) > 0
