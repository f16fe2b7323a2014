"""Jobs and snapshots over HTTP, on the fake task, with a worker running like in `serve`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jobs_fixtures import MakeProject, fake_plugin, fake_project

from fineloop.api import create_app
from fineloop.config import Settings
from fineloop.jobs.worker import Worker
from fineloop.store import Store

__all__ = ["fake_plugin", "fake_project"]


@pytest.fixture
def api(settings: Settings, store: Store) -> Iterator[TestClient]:
    """The API without a worker: jobs stay queued."""
    with TestClient(create_app(settings, store)) as client:
        yield client


@pytest.fixture
def served(settings: Settings, store: Store) -> Iterator[TestClient]:
    """The API with a worker, wired as `fineloop serve` wires it."""
    app = create_app(settings, store)
    # An hour between polls: only the route's wake() can start a job within the test.
    worker = Worker(store, settings, poll_seconds=3600)
    app.state.worker = worker
    worker.start()
    with TestClient(app) as client:
        yield client
    worker.stop()


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def poll(client: TestClient, job_id: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = ok(client.get(f"/v1/jobs/{job_id}"))
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def test_post_train_answers_202_at_once_and_a_second_one_409_naming_the_first(
    api: TestClient, fake_project: MakeProject
) -> None:
    name = fake_project()
    job = ok(api.post(f"/v1/projects/{name}/train", json={"overrides": {"gain": 0.2}}), 202)
    assert (job["state"], job["project"], job["kind"]) == ("queued", name, "train")
    assert job["config"] == {"overrides": {"gain": 0.2}}
    again = api.post(f"/v1/projects/{name}/train")
    assert again.status_code == 409
    assert again.json()["job_id"] == job["id"]
    assert f"already has train job {job['id']}" in again.json()["message"]
    listed = ok(api.get(f"/v1/projects/{name}/jobs"))
    assert [j["id"] for j in listed] == [job["id"]]
    assert ok(api.get(f"/v1/projects/{name}/jobs", params={"state": "running"})) == []
    cancelled = ok(api.post(f"/v1/jobs/{job['id']}/cancel"))
    assert cancelled["state"] == "cancelled"
    assert ok(api.post(f"/v1/jobs/{job['id']}/cancel"))["state"] == "cancelled"  # idempotent
    events = ok(api.get(f"/v1/jobs/{job['id']}/events"))
    assert [e["data"].get("state") for e in events] == ["queued", "cancelled"]
    assert ok(api.get(f"/v1/jobs/{job['id']}/events", params={"after": events[0]["id"]})) == [
        events[1]
    ]
    ok(api.post(f"/v1/projects/{name}/train"), 202)  # free again


def test_bad_requests_are_refused_before_a_job_exists(
    api: TestClient, fake_project: MakeProject
) -> None:
    name = fake_project()
    bad = api.post(f"/v1/projects/{name}/train", json={"overrides": {"gian": 1}})
    assert bad.status_code == 422 and "gian" in bad.json()["message"]
    assert api.post(f"/v1/projects/{name}/train", json={"epochs": 1}).status_code == 422
    for launch, field in (({"nproc": 0}, "nproc"), ({"launcher": "mpirun"}, "launcher")):
        refused = api.post(f"/v1/projects/{name}/train", json=launch)
        assert refused.status_code == 422 and field in refused.json()["message"]
    few = fake_project("few", examples=3)
    short = api.post(f"/v1/projects/{few}/train")
    assert short.status_code == 422
    assert short.json()["message"] == "training needs at least 6 labelled examples, has 3"
    assert api.post("/v1/projects/nope/train").status_code == 404
    assert ok(api.get(f"/v1/projects/{name}/jobs")) == []
    assert api.get("/v1/jobs/999").status_code == 404
    assert api.get("/v1/jobs/999/metrics").status_code == 404
    assert api.post("/v1/jobs/999/cancel").status_code == 404
    assert api.get(f"/v1/projects/{name}/jobs", params={"state": "bogus"}).status_code == 422


def test_the_builder_reads_the_jobs_overrides_over_the_projects_policy(
    served: TestClient, fake_project: MakeProject
) -> None:
    name = fake_project()
    policy = {"train": {"gain": 0.2, "fail": False}}
    ok(served.patch(f"/v1/projects/{name}", json={"training_policy": policy}))
    job_id = ok(served.post(f"/v1/projects/{name}/train", json={"overrides": {"gain": 0.1}}), 202)[
        "id"
    ]
    job = poll(served, job_id)
    snapshot = ok(served.get(f"/v1/projects/{name}/snapshots/{job['snapshot_id']}"))
    assert snapshot["config"]["train"] == {"gain": 0.1, "fail": False}


def test_a_job_posted_to_a_serving_app_trains_registers_and_reports(
    served: TestClient, fake_project: MakeProject
) -> None:
    name = fake_project()
    job_id = ok(served.post(f"/v1/projects/{name}/train", json={"overrides": {"gain": 0.1}}), 202)[
        "id"
    ]
    job = poll(served, job_id)  # the worker sleeps an hour between polls: the route woke it
    assert job["state"] == "succeeded", job["error"]
    assert (job["version"], job["progress"], job["result"]["promoted"]) == ("v1", 1.0, True)
    series = ok(served.get(f"/v1/jobs/{job_id}/metrics"))["series"]
    assert len(series["loss"]) == 4 and series["eval_score"][0]["value"] == pytest.approx(0.6)
    states = [
        e["data"]["state"]
        for e in ok(served.get(f"/v1/jobs/{job_id}/events"))
        if e["kind"] == "state"
    ]
    assert states == ["queued", "running", "succeeded"]
    snapshots = ok(served.get(f"/v1/projects/{name}/snapshots"))
    assert [s["id"] for s in snapshots] == [job["snapshot_id"]]
    assert snapshots[0]["splits"] == {"train": 6, "validation": 6, "test": 6}
    one = ok(served.get(f"/v1/projects/{name}/snapshots/{job['snapshot_id'][:10]}"))
    assert one["id"] == job["snapshot_id"] and one["bytes"] > 0
    assert served.get(f"/v1/projects/{name}/snapshots/deadbeefdeadbeef").status_code == 404
    version = ok(served.get(f"/v1/projects/{name}/versions/champion"))
    assert version["version"] == "v1" and version["job_id"] == job_id
    done = served.post(f"/v1/jobs/{job_id}/cancel")
    assert done.status_code == 409 and "already succeeded" in done.json()["message"]
