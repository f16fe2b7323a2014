"""`POST /v1/projects/{p}/extract`: one text or a batch through the shared serving, one
logged interaction per text, version pins, bounds, the 503 while the model loads, and a
project of another task refused."""

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
from fineloop.tasks.ner.routes import MAX_BATCH_CHARS, MAX_TEXTS
from ner.serving_helpers import TYPES, build_ner_model, create_project, extract

PROJECT = "maintenance"
TEXT = "Replaced the seal on the Flowserve pump, pressure 4 bar."


@pytest.fixture(scope="module")
def ner_model(_tiny_model_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_ner_model(_tiny_model_master, tmp_path_factory.mktemp("ner-model"))


@pytest.fixture
def project(client: TestClient, ner_model: Path) -> str:
    create_project(client, PROJECT, ner_model)
    return PROJECT


def _logged(client: TestClient, interaction_id: str) -> dict[str, Any]:
    found = client.get(f"/v1/projects/{PROJECT}/interactions/{interaction_id}")
    assert found.status_code == 200, found.text
    shown: dict[str, Any] = found.json()
    return shown


def _all_logged(client: TestClient) -> list[dict[str, Any]]:
    listed = client.get(f"/v1/projects/{PROJECT}/interactions")
    assert listed.status_code == 200, listed.text
    found: list[dict[str, Any]] = listed.json()
    return found


def _check_spans(text: str, spans: list[dict[str, Any]]) -> None:
    assert spans, "the test head finds every word"
    previous_end = 0
    for span in spans:
        assert previous_end <= span["start"] < span["end"] <= len(text)
        assert span["text"] == text[span["start"] : span["end"]]
        assert span["label"] in TYPES and 0.0 <= span["score"] <= 1.0
        assert span["source"] == "model"
        previous_end = span["end"]


def test_one_text_answers_one_result_and_logs_it(client: TestClient, project: str) -> None:
    answer = extract(client, project, text=TEXT, user_id="u1", metadata={"site": "north"})

    assert answer["model_version"] == "v0" and answer["variant"] is None
    [result] = answer["results"]
    _check_spans(TEXT, result["spans"])
    assert {"seal", "Flowserve", "pump"} <= {s["text"] for s in result["spans"]}
    logged = _logged(client, result["interaction_id"])
    assert logged["input"] == {"text": TEXT}
    assert logged["output"] == {"spans": result["spans"]}
    assert logged["user_id"] == "u1" and logged["model_version"] == "v0"
    assert logged["metadata"] == {"site": "north", "endpoint": "extract"}


def test_a_batch_answers_in_order_with_one_interaction_per_text(
    client: TestClient, project: str
) -> None:
    texts = ["Pump 3 leaks.", "Valve stuck at 40 psi.", "Nothing to report."]
    answer = extract(client, project, texts=texts, documents=["log-1", "log-1", "log-2"])

    assert len(answer["results"]) == 3
    ids = [r["interaction_id"] for r in answer["results"]]
    assert len(set(ids)) == 3
    for text, result, document in zip(
        texts, answer["results"], ["log-1", "log-1", "log-2"], strict=True
    ):
        _check_spans(text, result["spans"])
        logged = _logged(client, result["interaction_id"])
        assert logged["input"] == {"text": text, "document": document}
        assert logged["output"]["spans"] == result["spans"]
    assert len(_all_logged(client)) == 3


def test_a_pinned_version_answers_and_an_unknown_one_is_refused(
    client: TestClient, project: str
) -> None:
    assert extract(client, project, text=TEXT, version="v0")["model_version"] == "v0"
    assert extract(client, project, text=TEXT, version="champion")["model_version"] == "v0"
    unknown = client.post(f"/v1/projects/{project}/extract", json={"text": TEXT, "version": "v7"})
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["field"] == "version"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"texts": ["a"] * (MAX_TEXTS + 1)}, "texts"),
        ({"texts": ["x" * (MAX_BATCH_CHARS // 2)] * 2 + ["z"]}, "texts"),
        ({"text": "x" * 100_001}, "text"),
        ({"text": "a", "texts": ["b"]}, None),
        ({}, None),
        ({"texts": []}, "texts"),
        ({"texts": ["a", "b"], "documents": ["d"]}, None),
        ({"texts": ["a"], "document": "d"}, None),
        ({"text": 3}, "text"),
        ({"text": "a", "confidence": 0.5}, "confidence"),
    ],
)
def test_bad_requests_are_refused_before_any_model_runs(
    client: TestClient, project: str, body: dict[str, Any], field: str | None
) -> None:
    answer = client.post(f"/v1/projects/{project}/extract", json=body)
    assert answer.status_code == 422, answer.text
    if field is not None:
        refused = answer.json()
        where = refused.get("field") or refused["errors"][0]["field"]
        assert where.startswith(field), refused
    assert _all_logged(client) == []


def test_a_project_of_another_task_is_refused(client: TestClient, tiny_model: Path) -> None:
    body = {"name": "faq", "task": "embedding", "base_model": str(tiny_model)}
    assert client.post("/v1/projects", json=body).status_code == 201
    answer = client.post("/v1/projects/faq/extract", json={"text": TEXT})
    assert answer.status_code == 422, answer.text
    assert "'embedding' project" in answer.json()["message"]
    missing = client.post("/v1/projects/nope/extract", json={"text": TEXT})
    assert missing.status_code == 404


@pytest.fixture
def impatient(settings: Settings, store: Store) -> Iterator[TestClient]:
    """An app whose requests never wait for a model load."""
    quick = settings.model_copy(update={"serving_wait_seconds": 0.0})
    with TestClient(create_app(quick, store)) as client:
        yield client


def test_503_with_retry_after_while_the_model_loads(impatient: TestClient, ner_model: Path) -> None:
    create_project(impatient, PROJECT, ner_model)
    state = get_serving(impatient.app)
    gate = threading.Event()
    state.models.loader.submit(lambda: gate.wait(30))  # holds the load behind it
    try:
        busy = impatient.post(f"/v1/projects/{PROJECT}/extract", json={"text": TEXT})
        assert busy.status_code == 503, busy.text
        assert int(busy.headers["retry-after"]) >= 1
    finally:
        gate.set()
    state.models.loader.join()
    assert extract(impatient, PROJECT, text=TEXT)["results"][0]["spans"]
    assert len(_all_logged(impatient)) == 1
