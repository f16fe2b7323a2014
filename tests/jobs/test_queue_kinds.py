"""Job kinds besides training, queued over the API and run by a worker: a snapshot build
and an evaluation (the fake task computes both). Plus a plugin kind, run in-process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jobs_fixtures import MakeProject, fake_plugin, fake_project
from jobs_queue_kinds import executions, queue_plugin
from test_jobs_worker import finished

from fineloop.config import Settings
from fineloop.jobs import store as jobs
from fineloop.jobs.runner import known_kinds, runs_in_process
from fineloop.jobs.worker import Worker
from fineloop.store import Store
from fineloop.store.projects import get_project

__all__ = ["fake_plugin", "fake_project", "queue_plugin"]


@pytest.fixture
def worker(store: Store, settings: Settings) -> Iterator[Worker]:
    running = Worker(store, settings, poll_seconds=0.1)
    running.start()
    yield running
    running.stop()


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def test_a_snapshot_build_job_publishes_the_snapshot_and_names_it(
    client: TestClient, store: Store, fake_project: MakeProject, worker: Worker
) -> None:
    name = fake_project()
    queued = ok(client.post(f"/v1/projects/{name}/snapshots/build", json={"seed": 1}), 202)
    assert (queued["kind"], queued["state"], queued["config"]) == (
        "build_snapshot",
        "queued",
        {"seed": 1},
    )
    busy = client.post(f"/v1/projects/{name}/snapshots/build")
    if busy.status_code == 409:  # the worker may already have finished the first one
        assert busy.json()["job_id"] == queued["id"]
    job = finished(store, queued["id"])
    assert job.state == "succeeded", job.error
    snapshots = ok(client.get(f"/v1/projects/{name}/snapshots"))
    assert job.result["snapshot_id"] == job.snapshot_id == snapshots[0]["id"]
    assert (
        job.result["splits"]
        == snapshots[0]["splits"]
        == {
            "train": 6,
            "validation": 6,
            "test": 6,
        }
    )
    assert job.message.startswith(f"snapshot {job.snapshot_id[:12]} built")
    refused = client.post(f"/v1/projects/{name}/snapshots/build", json={"seed": -1})
    assert refused.status_code == 422


def test_an_evaluation_job_scores_a_version_on_the_test_split(
    client: TestClient, store: Store, fake_project: MakeProject, worker: Worker
) -> None:
    name = fake_project(skill=0.5)
    assert client.post(f"/v1/projects/{name}/evaluate", json={"version": "v9"}).status_code == 404
    assert client.post(f"/v1/projects/{name}/evaluate", json={"x": 1}).status_code == 422
    # the champion of a project that never trained: its base model, on a snapshot built now
    first = ok(client.post(f"/v1/projects/{name}/evaluate"), 202)
    second = ok(client.post(f"/v1/projects/{name}/evaluate"), 202)  # side by side: no 409
    finished(store, first["id"])
    third = ok(client.post(f"/v1/projects/{name}/evaluate", json={"version": "0"}), 202)
    for queued in (first, second, third):
        job = finished(store, queued["id"])
        assert job.state == "succeeded", job.error
        result = job.result
        assert (result["version"], result["split"], result["primary"]) == ("v0", "test", "score")
        assert result["examples"] == 6
        assert 0.4 < result["metrics"]["score"] < 0.6  # skill 0.5 +- at most 0.05
        assert job.snapshot_id == result["snapshot_id"]
    with store.read() as session:
        series = jobs.metric_series(session, first["id"])
    assert series["test_score"][0]["value"] == first_score(store, first["id"])
    snapshot = finished(store, first["id"]).snapshot_id
    assert snapshot is not None
    pinned = ok(client.post(f"/v1/projects/{name}/evaluate", json={"snapshot": snapshot[:10]}), 202)
    assert pinned["config"] == {"version": "champion", "snapshot": snapshot}
    assert finished(store, pinned["id"]).result["snapshot_id"] == snapshot
    missing = client.post(f"/v1/projects/{name}/evaluate", json={"snapshot": "0" * 12})
    assert missing.status_code == 404


def first_score(store: Store, job_id: int) -> float:
    with store.read() as session:
        return float(jobs.get_job(session, job_id).result["metrics"]["score"])


def test_a_plugin_kind_runs_inside_the_worker_when_it_says_it_is_light(
    store: Store, settings: Settings, tmp_path: Path, fake_project: MakeProject, queue_plugin: None
) -> None:
    assert "record" in known_kinds() and runs_in_process("record")
    assert not runs_in_process("train")
    name = fake_project()
    log = tmp_path / "executions.log"
    with store.write() as session:
        project = get_project(session, name)
        job_id = jobs.create_job(session, project, "record", {"log": str(log)}).id
    running = Worker(store, settings, poll_seconds=0.1)
    running.start()
    try:
        job = finished(store, job_id)
    finally:
        running.stop()
    assert job.state == "succeeded", job.error
    assert job.result["pid"] == __import__("os").getpid()  # no child process
    assert executions(log) == [(job_id, 1, running.name)]
