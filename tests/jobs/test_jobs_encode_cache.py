"""One encode per model per catalog: a training job reads and writes the vectors serving
keeps for each model, and reports what it encoded and reused per phase.

Real embedding jobs on the tiny model (tests/handmade_snapshot.py's ten items), run in
this process with `execute`; the counters are read back from the job's metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fineloop.config import Settings
from fineloop.jobs import store as jobs
from fineloop.jobs.runner import execute
from fineloop.jobs.sink import StoreSink
from fineloop.registry.versions import resolve
from fineloop.serving.versions import VersionRef
from fineloop.snapshots import built_snapshot, get_snapshot
from fineloop.store import Store
from fineloop.store.projects import get_project
from fineloop.store.schema import Job, JobMetric
from fineloop.tasks.embedding.evaluate import evaluate
from fineloop.tasks.embedding.predict import EmbeddingPredictor
from fineloop.tasks.embedding.serving.catalog import Catalog
from fineloop.tasks.embedding.serving.persist import VectorCache
from handmade_snapshot import ITEMS, QUERIES

TRAIN = {
    "epochs": 2,
    "batch_size": 8,
    "learning_rate": 1e-3,
    "warmup_ratio": 0.0,
    "precision": "fp32",
    "logging_steps": 4,
}
PHASES = ("mining", "validation", "evaluation")


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code in (status, 201), response.text
    return response.json()


@pytest.fixture
def project(client: TestClient, tiny_model: Path) -> str:
    ok(
        client.post(
            "/v1/projects", json={"name": "faq", "task": "embedding", "base_model": str(tiny_model)}
        ),
        201,
    )
    policy = {"train": TRAIN, "bootstrap_samples": 200}
    ok(client.patch("/v1/projects/faq", json={"training_policy": policy}))
    items = [{"id": k, "text": v} for k, v in ITEMS.items()]
    ok(client.put("/v1/projects/faq/items", json={"items": items}))
    labels = [
        {"kind": "label", "input": query, "items": [item]}
        for item, queries in QUERIES.items()
        for query in queries
    ]
    ok(client.post("/v1/projects/faq/feedback/batch", json={"events": labels}), 201)
    return "faq"


def train(store: Store, settings: Settings, name: str) -> tuple[Job, dict[str, float]]:
    """Run one training job here; its job row and its step-0 metrics by name."""
    with store.write() as session:
        job = jobs.create_job(session, get_project(session, name), "train", {}, claimed_by="t")
    assert execute(store, settings, job.id, StoreSink(store, job.id)) == "succeeded"
    with store.read() as session:
        done = jobs.get_job(session, job.id)
        points = session.query(JobMetric).filter(JobMetric.job_id == job.id).all()
    return done, {p.name: p.value for p in points if p.step == 0}


def encoded(metrics: dict[str, float]) -> dict[str, int]:
    return {phase: int(metrics.get(f"encoded/{phase}", 0)) for phase in PHASES}


def reused(metrics: dict[str, float]) -> dict[str, int]:
    return {phase: int(metrics.get(f"reused/{phase}", 0)) for phase in PHASES}


def test_a_job_encodes_each_item_once_per_model_and_the_next_job_reuses_them(
    client: TestClient, store: Store, settings: Settings, project: str
) -> None:
    items = len(set(ITEMS.values()))
    job, metrics = train(store, settings, project)
    # v0 encodes the catalog once, to mine; the candidate's vectors come from the trainer's
    # evaluation of the kept checkpoint, checked on a probe (here every text: 10 < 32)
    assert encoded(metrics) == {"mining": items, "validation": items, "evaluation": 0}
    assert reused(metrics)["evaluation"] == 2 * items  # v0 (base and champion) + candidate
    assert reused(metrics)["validation"] == 2 * items  # v0 and candidate scored
    for name in ("build", "train", "evaluate"):
        assert metrics[f"phase_seconds/{name}"] > 0
    result = job.result or {}

    # the same metrics with the catalog encoded by the library itself (no vector file)
    with store.read() as session:
        found = get_project(session, project)
        snapshot = built_snapshot(get_snapshot(session, found, job.snapshot_id or ""), settings)
        v0 = resolve(session, found, "v0")
        v1 = resolve(session, found, "v1")
    plain = evaluate(v1.artifact_uri, snapshot.path, "test", cache=False)
    for name, value in result["metrics"]["candidate"].items():
        assert plain.metrics[name] == pytest.approx(value, abs=1e-6), name
    plain_base = evaluate(v0.artifact_uri, snapshot.path, "test", cache=False)
    for name, value in result["metrics"]["base"].items():
        assert plain_base.metrics[name] == pytest.approx(value, abs=1e-6), name

    # serving finds v1's vectors ready: building its catalog embeds nothing
    predictor = EmbeddingPredictor(v1.artifact_uri)
    cache = VectorCache.for_version(
        settings,
        project,
        v1.number,
        v1.id,
        predictor.dimension,
        model=predictor.model_id,
        max_seq_length=predictor.model.get_max_seq_length(),
        encoder=predictor.backend,
    )
    assert cache is not None and len(cache) == items and cache.read_encoder == "torch-fp32"
    catalog = Catalog(found.id, VersionRef(v1.id, v1.number, v1.artifact_uri), predictor, cache)
    catalog.load_all(store)
    assert len(catalog) == len(ITEMS) and not catalog.dirty  # every vector read, none embedded

    # a second job: the champion and base have their vectors; only the probe is encoded
    _, again = train(store, settings, project)
    assert encoded(again) == {"mining": 0, "validation": items, "evaluation": 0}

    # an edited item is encoded again, by each model that reads it, and nothing else is
    ok(client.put("/v1/projects/faq/items", json={"items": [{"id": "i03", "text": "a new text"}]}))
    _, edited = train(store, settings, project)
    assert edited["encoded/mining"] == 1
    assert edited["encoded/evaluation"] <= 1  # the base, when it is not the champion
    assert edited["reused/mining"] == items - 1
