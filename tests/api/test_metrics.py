"""`/metrics`: Prometheus counters by route template and status, jobs and feedback from the
store; open in open mode, admin-only once keys exist."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from fineloop.api import create_app
from fineloop.config import Settings, get_settings
from fineloop.jobs import store as jobs
from fineloop.store import Store
from fineloop.store.projects import get_project

ADMIN = "admin-key-for-the-tests-0123456789abcdef"  # configured keys: 32+ characters
INGEST = "ingest-key-for-the-tests-0123456789abcdef"


def scrape(
    client: TestClient, **headers: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def requests(method: str, route: str, status: int) -> tuple[str, tuple[tuple[str, str], ...]]:
    labels = {"method": method, "route": route, "status": str(status)}
    return ("fineloop_http_requests_total", tuple(sorted(labels.items())))


def test_requests_are_counted_by_route_template_and_status(client: TestClient) -> None:
    assert client.post("/v1/projects", json={"name": "a", "task": "fake"}).status_code == 201
    assert client.post("/v1/projects", json={"name": "b", "task": "fake"}).status_code == 201
    for name in ("a", "b", "a"):
        assert client.get(f"/v1/projects/{name}").status_code == 200
    assert client.get("/v1/projects/missing").status_code == 404
    assert client.get("/no/such/route").status_code == 404

    samples = scrape(client)
    assert samples[requests("POST", "/v1/projects", 201)] == 2
    assert samples[requests("GET", "/v1/projects/{project}", 200)] == 3  # one label, 2 names
    assert samples[requests("GET", "/v1/projects/{project}", 404)] == 1
    assert samples[requests("GET", "<unmatched>", 404)] == 1
    histogram = (
        "fineloop_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/v1/projects/{project}")),
    )
    assert samples[histogram] == 4
    assert not any("/v1/projects/a" in str(key) for key in samples)


def test_jobs_queue_depth_and_feedback_come_from_the_store(
    client: TestClient, store: Store
) -> None:
    assert client.post("/v1/projects", json={"name": "p", "task": "fake"}).status_code == 201
    event = {"kind": "preference", "input": "Say hi", "chosen": "Hello!", "rejected": "Go away."}
    for _ in range(3):
        assert client.post("/v1/projects/p/feedback", json=event).status_code == 201
    with store.write() as session:
        project = get_project(session, "p")
        jobs.create_job(session, project, "evaluate", {})
        jobs.create_job(session, project, "build_snapshot", {}, claimed_by="worker-1")

    samples = scrape(client)
    assert samples[("fineloop_feedback_events", ())] == 3
    assert samples[("fineloop_jobs", (("kind", "evaluate"), ("state", "queued")))] == 1
    assert samples[("fineloop_jobs", (("kind", "build_snapshot"), ("state", "running")))] == 1
    depth = {key[1]: value for key, value in samples.items() if key[0] == "fineloop_queue_depth"}
    assert depth == {
        (("kind", "evaluate"), ("state", "queued")): 1,
        (("kind", "evaluate"), ("state", "running")): 0,
        (("kind", "build_snapshot"), ("state", "queued")): 0,
        (("kind", "build_snapshot"), ("state", "running")): 1,
    }


def test_with_keys_metrics_need_an_admin_key(settings: Settings, store: Store) -> None:
    with_keys = get_settings(
        data_dir=settings.data_dir,
        database_url=settings.database_url,
        api_keys=f"{ADMIN}:admin,{INGEST}:ingest",
    )
    with TestClient(create_app(with_keys, store)) as client:
        assert client.get("/metrics").status_code == 401
        denied = client.get("/metrics", headers={"Authorization": f"Bearer {INGEST}"})
        assert denied.status_code == 403 and "needs 'admin'" in denied.text
        samples = scrape(client, Authorization=f"Bearer {ADMIN}")
        assert samples[requests("GET", "/metrics", 403)] == 1
