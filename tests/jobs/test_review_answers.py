"""Champion/candidate disagreement in the review queue: with the queue ranked by
disagreement, a training job records what its candidate ranks first for every queued
search (on the tiny model, checked against bare sentence-transformers over the same
catalog), and the queue then puts the searches where the candidate would have shown
another top item first. Ranked otherwise, nothing runs; a failing family hook is logged
and answers nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sentence_transformers import SentenceTransformer
from sqlalchemy import select

from fineloop import artifacts
from fineloop.config import Settings
from fineloop.jobs import store as jobs
from fineloop.jobs.review_answers import candidate_answers
from fineloop.jobs.runner import execute
from fineloop.jobs.sink import StoreSink
from fineloop.store import Store
from fineloop.store.projects import get_project
from fineloop.store.schema import Job, ReviewAnswer
from fineloop.tasks.base import NullSink
from fineloop.tasks.embedding import EmbeddingTask
from handmade_snapshot import ITEMS, QUERIES

TRAIN = {"epochs": 3, "batch_size": 8, "learning_rate": 1e-3, "warmup_ratio": 0.0}
PAIRS = [(item, query) for item, queries in QUERIES.items() for query in queries]
ASKED = ["where is my parcel", "i forgot the password", "close my account", "new email"]


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def seed(client: TestClient, tiny_model: Path, ranking: str) -> list[str]:
    """A trainable project whose queue holds ASKED, each shown with the same top item
    (i01): the ids of those queued searches."""
    ok(client.post("/v1/projects", json={"name": "faq", "task": "embedding"}), 201)
    policy = {"train": TRAIN | {"precision": "fp32"}, "bootstrap_samples": 200}
    changes = {"base_model": str(tiny_model), "training_policy": policy}
    ok(client.patch("/v1/projects/faq", json=changes | {"review_policy": {"ranking": ranking}}))
    items = [{"id": k, "text": v} for k, v in ITEMS.items()]
    ok(client.put("/v1/projects/faq/items", json={"items": items}))
    labels = [{"kind": "label", "input": q, "items": [i]} for i, q in PAIRS]
    ok(client.post("/v1/projects/faq/feedback/batch", json={"events": labels}), 201)
    shown = {"mode": "search", "items": [{"id": "i01", "score": 0.5}, {"id": "i02", "score": 0.4}]}
    rows = [
        {"id": f"q{n}", "input": {"query": q}, "output": shown, "model_version": "v0"}
        for n, q in enumerate(ASKED)
    ]
    ok(client.post("/v1/projects/faq/interactions/batch", json={"interactions": rows}), 201)
    return [row["id"] for row in rows]


def train(store: Store, settings: Settings) -> Job:
    with store.write() as session:
        job = jobs.create_job(session, get_project(session, "faq"), "train", {}, claimed_by="t")
    execute(store, settings, job.id, StoreSink(store, job.id))
    with store.read() as session:
        return jobs.get_job(session, job.id)


def recorded(store: Store) -> dict[str, tuple[str, Any]]:
    with store.read() as session:
        rows = session.scalars(select(ReviewAnswer))
        return {row.interaction_id: (row.version, row.answer) for row in rows}


def bare_top_items(model: Path, queries: list[str]) -> list[str]:
    """What the model ranks first over the catalog, by sentence-transformers alone."""
    loaded = SentenceTransformer(str(model), device="cpu")
    ids = list(ITEMS)
    documents = loaded.encode([ITEMS[i] for i in ids], normalize_embeddings=True)
    asked = loaded.encode(queries, normalize_embeddings=True)
    return [ids[int(i)] for i in np.argmax(asked @ documents.T, axis=1)]


def test_a_job_records_its_candidates_top_items_and_the_queue_puts_disagreement_first(
    client: TestClient, store: Store, settings: Settings, tiny_model: Path
) -> None:
    queued = seed(client, tiny_model, "disagreement")
    job = train(store, settings)
    assert job.state == "succeeded", job.error
    version = ok(client.get("/v1/projects/faq/versions/v1"))
    candidate = bare_top_items(artifacts.fetch(settings, version["artifact_uri"]), ASKED)
    assert recorded(store) == {q: ("v1", top) for q, top in zip(queued, candidate, strict=True)}
    messages = [e["message"] for e in ok(client.get(f"/v1/jobs/{job.id}/events"))]
    assert any("the candidate answered 4 queued inputs" in m for m in messages)

    page = ok(client.get("/v1/projects/faq/review"))
    order = [(i["interaction"]["id"], i["reason"], i["disagrees_with"]) for i in page["items"]]
    differ = {q for q, top in zip(queued, candidate, strict=True) if top != "i01"}
    assert differ and differ != set(queued)  # the tiny model moved some, not all
    assert {q for q, _, _ in order[: len(differ)]} == differ  # disagreement first
    for q, reason, others in order:
        assert (reason == "disagreement") is (q in differ)
        assert others == (["v1"] if q in differ else [])


class Recording(EmbeddingTask):
    """The embedding family, its review answers replaced: what the loop asked, or a crash."""

    def __init__(self, crash: bool = False) -> None:
        self.crash = crash
        self.asked: list[Any] = []

    def review_answers(self, model: Any, snapshot: Any, options: Any, inputs: Any) -> Any:
        if self.crash:
            raise RuntimeError("the catalog vanished")
        self.asked.append(inputs)
        return ["i01"] * len(inputs)


class Logs(NullSink):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def answers_of(store: Store, task: EmbeddingTask, sink: Logs) -> dict[str, Any]:
    with store.read() as session:
        project = get_project(session, "faq")
    return candidate_answers(store, task, project, Path("model"), Path("snapshot"), sink)


def test_only_a_queue_ranked_by_disagreement_runs_the_candidate(
    client: TestClient, store: Store, tiny_model: Path
) -> None:
    queued = seed(client, tiny_model, "uncertainty")
    task, sink = Recording(), Logs()
    assert answers_of(store, task, sink) == {} and task.asked == [] and sink.lines == []
    ok(client.patch("/v1/projects/faq", json={"review_policy": {"ranking": "disagreement"}}))
    assert answers_of(store, task, sink) == dict.fromkeys(queued, "i01")
    assert [sorted(i["query"] for i in inputs) for inputs in task.asked] == [sorted(ASKED)]
    ok(
        client.post(
            "/v1/projects/faq/feedback",
            json={"kind": "thumb", "interaction_id": "q0", "value": "up"},
        ),
        201,
    )
    assert "q0" not in answers_of(store, task, sink)  # answered: no longer queued


def test_a_failing_family_hook_is_logged_and_answers_nothing(
    client: TestClient, store: Store, tiny_model: Path
) -> None:
    seed(client, tiny_model, "disagreement")
    sink = Logs()
    assert answers_of(store, Recording(crash=True), sink) == {}
    assert any("failed (the catalog vanished); skipped" in line for line in sink.lines)
