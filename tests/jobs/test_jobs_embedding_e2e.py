"""The loop end to end on the real embedding task and the tiny model: feedback in, a gated
version out; a killed or cancelled training leaves the registry and the champion alone.

The data is hand-made (tests/handmade_snapshot.py): ten catalog items and four paraphrased
queries per item, sent as label events, plus selections on logged interactions.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import LiveServer
from fineloop.cli import app
from fineloop.config import Settings
from fineloop.jobs import store as jobs
from fineloop.jobs.runner import execute
from fineloop.jobs.sink import StoreSink
from fineloop.jobs.train import TRAIN as TRAIN_STAGE
from fineloop.sdk import Client
from fineloop.store import Store
from fineloop.store.projects import get_project
from handmade_snapshot import ITEMS, QUERIES

# A random 32-d BERT learns these in a few dozen steps with a high rate; fp32 keeps it exact.
TRAIN = {
    "epochs": 4,
    "batch_size": 8,
    "learning_rate": 1e-3,
    "warmup_ratio": 0.0,
    "precision": "fp32",
    "logging_steps": 2,
}
LONG = {"epochs": 100, "early_stopping_patience": None}  # stopped long before it ends
PAIRS = [(item, query) for item, queries in QUERIES.items() for query in queries]
METRICS = {"accuracy@1", "accuracy@5", "mrr@10", "ndcg@10", "recall@10"}


def seed_project(client: Client, name: str, base_model: Path, labels: int = 40) -> None:
    """Items, label events for `labels` queries, and selections on shown rankings."""
    client.create_project(name, "embedding", base_model=str(base_model))
    client.update_project(name, training_policy={"train": TRAIN, "bootstrap_samples": 500})
    client.upsert_items(name, [{"id": k, "text": v} for k, v in ITEMS.items()])
    events: list[dict[str, Any]] = [
        {"kind": "label", "input": query, "items": [item]} for item, query in PAIRS[:labels]
    ]
    if labels >= len(PAIRS):
        ids = sorted(ITEMS)
        for n, (item, query) in enumerate(PAIRS[::4]):
            wrong = ids[(ids.index(item) + 1) % len(ids)]
            shown = {"items": [{"id": wrong, "score": 0.6}, {"id": item, "score": 0.5}]}
            interaction = client.log_interaction(name, {"query": query}, shown, id=f"s{n}")
            events.append(
                {
                    "kind": "selection",
                    "interaction_id": interaction,
                    "selected": [item],
                    "rejected": [wrong],
                }
            )
    client.send_feedback_batch(name, events)


def wait_until(check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def child_pid(client: Client, job_id: int) -> int:
    return next(int(e["data"]["pid"]) for e in client.job_events(job_id) if "pid" in e["data"])


def training(client: Client, job_id: int) -> Callable[[], bool]:
    """True once the job is past its snapshot and inside the trainer."""
    return lambda: client.job(job_id)["progress"] > TRAIN_STAGE[0]  # the trainer reported a step


@pytest.fixture
def server(settings: Settings, tiny_model: Path) -> Any:
    live = LiveServer(settings)
    with Client(live.url) as client:
        seed_project(client, "faq", tiny_model)
        yield live, client
    live.stop()


def test_train_over_http_registers_a_gated_version_and_survives_kill_and_cancel(
    server: tuple[LiveServer, Client], settings: Settings, tiny_model: Path
) -> None:
    _live, client = server
    queued = client.train("faq")
    assert queued["state"] == "queued"
    job = client.wait(queued["id"], timeout=180, poll=0.5)
    assert job["state"] == "succeeded", job["error"]
    assert [v["version"] for v in client.versions("faq")] == ["v0", "v1"]
    v1 = client.version("faq", "v1")
    metrics = v1["metrics"]
    for role in ("base", "champion", "candidate"):
        assert set(metrics[role]) == METRICS, role
    assert metrics["primary"] == "ndcg@10" and metrics["examples"] > 0
    assert metrics["interval"]["low"] <= metrics["interval"]["mean"] <= metrics["interval"]["high"]
    assert metrics["candidate"]["ndcg@10"] > metrics["base"]["ndcg@10"]  # it learned
    gate = v1["gate"]
    assert gate["reason"].startswith("ndcg@10: candidate - champion")
    assert gate["promoted"] == gate["passed"]  # the gate alone decides (auto_promote is on)
    assert client.aliases("faq")["champion"] == ("v1" if gate["passed"] else "v0")
    assert client.aliases("faq")["challenger"] == "v1"
    assert v1["snapshot_id"] == job["snapshot_id"]
    assert client.snapshot("faq", v1["snapshot_id"])["splits"]["test"] > 0
    assert client.job_metrics(job["id"])["loss"]
    champion = client.aliases("faq")["champion"]

    # a training process killed mid-run: the job fails, nothing is registered
    doomed = client.train("faq", **LONG)["id"]
    wait_until(training(client, doomed))
    os.kill(child_pid(client, doomed), signal.SIGKILL)
    killed = client.wait(doomed, timeout=60, poll=0.2)
    assert killed["state"] == "failed" and "SIGKILL" in killed["error"]
    assert [v["version"] for v in client.versions("faq")] == ["v0", "v1"]
    assert client.version("faq", "champion")["version"] == champion

    # cancel: a queued job (the worker is busy with another project) and a running one
    seed_project(client, "other", tiny_model)
    running = client.train("faq", **LONG)["id"]
    wait_until(training(client, running))
    waiting = client.train("other")
    assert waiting["state"] == "queued"
    assert client.cancel_job(waiting["id"])["state"] == "cancelled"
    client.cancel_job(running)
    stopped = client.wait(running, timeout=30, poll=0.2)
    assert stopped["state"] == "cancelled"
    assert client.job(waiting["id"])["started_at"] is None
    assert [v["version"] for v in client.versions("faq")] == ["v0", "v1"]
    assert client.versions("other") == []  # never ran: not even its v0
    # the scratch folders go once each job's process has recorded its end (just after)
    scratch = Path(settings.resolved_artifact_root) / "faq" / "tmp"
    wait_until(lambda: not list(scratch.glob("job*")), timeout=60)


def test_too_few_examples_are_refused_up_front_and_fail_a_job_with_the_builders_message(
    client: TestClient, store: Store, settings: Settings, tiny_model: Path
) -> None:
    ok(
        client.post(
            "/v1/projects", json={"name": "few", "task": "embedding", "base_model": str(tiny_model)}
        ),
        201,
    )
    ok(
        client.put(
            "/v1/projects/few/items",
            json={"items": [{"id": k, "text": v} for k, v in ITEMS.items()]},
        )
    )
    labels = [{"kind": "label", "input": q, "items": [i]} for i, q in PAIRS[:3]]
    ok(client.post("/v1/projects/few/feedback/batch", json={"events": labels}), 201)
    refused = client.post("/v1/projects/few/train")
    assert refused.status_code == 422, refused.text
    message = refused.json()["message"]
    assert "needs at least 8 (query, item) examples" in message and "has 3" in message
    assert ok(client.get("/v1/projects/few/jobs")) == []
    # a job that gets past the check (the feedback may change meanwhile) fails the same way
    with store.write() as session:
        job = jobs.create_job(session, get_project(session, "few"), "train", {}, claimed_by="t")
    assert execute(store, settings, job.id, StoreSink(store, job.id)) == "failed"
    failed = ok(client.get(f"/v1/jobs/{job.id}"))
    assert failed["error"] == message
    aliases = ok(client.get("/v1/projects/few/aliases"))
    assert [(a["alias"], a["version"]) for a in aliases] == [("champion", "v0")]


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def test_cli_train_in_the_foreground_returns_0_and_prints_the_gate_decision(
    settings: Settings, tiny_model: Path
) -> None:
    live = LiveServer(settings)  # only to seed the store through the API
    try:
        with Client(live.url) as client:
            seed_project(client, "faq", tiny_model)
    finally:
        live.stop()
    env = {"FINELOOP_DATA_DIR": str(settings.data_dir)}
    if settings.database_url:
        env["FINELOOP_DATABASE_URL"] = settings.database_url
    result = CliRunner().invoke(app, ["train", "faq"], env=env)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    passed = "gate passed: ndcg@10: candidate - champion" in out
    assert passed or "gate not passed: ndcg@10: candidate - champion" in out
    assert (
        "job 1 succeeded: v1 registered and promoted to champion (champion: v1)"
        if passed
        else "job 1 succeeded: v1 registered; champion stays v0 (champion: v0)"
    ) in out
    assert "ndcg@10 *" in out and "candidate (v1)" in out
