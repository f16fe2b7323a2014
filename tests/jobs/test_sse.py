"""`GET /v1/jobs/{id}/events` as Server-Sent Events, on a live server running the fake task."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
from jobs_fixtures import MakeProject, fake_plugin, fake_project
from jobs_live import (
    SSE,
    by_table,
    queue_job,
    read_stream,
    rows,
    server,
    states,
    wait_progress,
    wait_state,
)

from conftest import LiveServer
from fineloop.jobs import store as jobs
from fineloop.store import Store

__all__ = ["fake_plugin", "fake_project", "server"]


def test_a_stream_delivers_events_and_metrics_in_order_and_ends_at_the_final_state(
    fake_project: MakeProject, server: LiveServer
) -> None:
    name = fake_project()
    job_id = queue_job(server.url, name, steps=6, step_seconds=0.1)
    live = read_stream(server.url, job_id)  # returns only because the server ends it

    assert states(live) == ["queued", "running", "succeeded"], live
    finals = [m for m in live if m.event == "state" and m.data["data"]["state"] == "succeeded"]
    assert finals[0].data["message"] == "v1 registered and promoted to champion"
    metrics = [(m.data["name"], m.data["step"]) for m in live if m.event == "metric"]
    phases = [name for name, _ in metrics if name.startswith("phase_seconds/")]
    trained = [metric for metric in metrics if not metric[0].startswith("phase_seconds/")]
    assert trained == [("loss", step) for step in range(1, 7)] + [("eval_score", 6)]
    assert phases == ["phase_seconds/build", "phase_seconds/train", "phase_seconds/evaluate"]
    cursors = [tuple(int(p) for p in str(m.id).split("-")) for m in live]
    assert cursors == sorted(cursors)  # both parts of the position only ever grow
    progress = [m.data["progress"] for m in live if m.event == "progress"]
    assert progress == sorted(progress) and progress[-1] == 1.0
    # the stream has everything the JSON endpoints have, each row once
    listed = httpx.get(f"{server.url}/v1/jobs/{job_id}/events").json()
    assert [r for r in rows(live) if r[0] == "event"] == [("event", e["id"]) for e in listed]
    assert [e["kind"] for e in listed if e["kind"] == "state"] == ["state"] * 3


def test_resuming_from_last_event_id_sends_only_what_came_later(
    fake_project: MakeProject, server: LiveServer
) -> None:
    name = fake_project()
    job_id = queue_job(server.url, name, steps=8, step_seconds=0.15)
    wait_progress(server.url, job_id)
    first = read_stream(server.url, job_id, stop_after=6)  # then the connection drops
    resumed = read_stream(server.url, job_id, {"Last-Event-ID": str(first[-1].id)})
    assert states(resumed)[-1] == "succeeded"
    whole = read_stream(server.url, job_id)  # the finished job, from the start
    assert by_table(first + resumed) == by_table(whole)  # nothing twice, nothing missed

    middle = whole[len(whole) // 2]
    after_middle = read_stream(server.url, job_id, {"Last-Event-ID": str(middle.id)})
    assert by_table(after_middle) == by_table(whole[whole.index(middle) + 1 :])
    # the query parameters do the same for clients that cannot set headers
    event_id, metric_id = str(middle.id).split("-")
    by_query = read_stream(server.url, job_id, query=f"?after={event_id}&after_metric={metric_id}")
    assert by_table(by_query) == by_table(after_middle)
    # a bare event id resumes the events exactly (metric points: those written after it)
    state_ids = [m.data["id"] for m in whole if m.event == "state"]
    bare = read_stream(server.url, job_id, {"Last-Event-ID": str(state_ids[1])})
    everything = by_table(whole)
    assert by_table(bare)["event"] == [i for i in everything["event"] if i > state_ids[1]]
    got = by_table(bare)["metric"]
    assert got == everything["metric"][len(everything["metric"]) - len(got) :]  # a suffix
    # after the end there is nothing more: 204 tells an EventSource to stop reconnecting
    done = httpx.get(
        f"{server.url}/v1/jobs/{job_id}/events",
        headers=SSE | {"Last-Event-ID": str(whole[-1].id)},
    )
    assert done.status_code == 204


def test_bad_requests_get_json_errors_and_plain_requests_the_json_list(
    fake_project: MakeProject, server: LiveServer
) -> None:
    name = fake_project()
    missing = httpx.get(f"{server.url}/v1/jobs/999/events", headers=SSE)
    assert missing.status_code == 404
    assert missing.json()["message"] == "unknown job 999"
    job_id = queue_job(server.url, name, steps=2)
    wait_state(server.url, job_id, ("succeeded",))
    bad = httpx.get(
        f"{server.url}/v1/jobs/{job_id}/events", headers=SSE | {"Last-Event-ID": "12-x"}
    )
    assert bad.status_code == 422
    assert "is not a stream position" in bad.json()["message"]
    plain = httpx.get(f"{server.url}/v1/jobs/{job_id}/events", params={"after": 1})
    assert plain.status_code == 200 and plain.headers["content-type"] == "application/json"
    assert [e["id"] for e in plain.json()] == sorted(e["id"] for e in plain.json())
    assert plain.json()[0]["id"] > 1


def test_open_streams_leave_the_server_serving_and_end_when_the_job_is_cancelled(
    fake_project: MakeProject, server: LiveServer
) -> None:
    name = fake_project()
    job_id = queue_job(server.url, name, steps=100, step_seconds=2.5)  # quiet gaps
    wait_progress(server.url, job_id)
    streams: list[list[object]] = []
    raw: list[str] = []

    def watch(index: int) -> None:
        query = "?keepalive=1" if index == 0 else ""
        found = read_stream(server.url, job_id, query=query, raw=raw if index == 0 else None)
        streams.append(list(found))

    threads = [threading.Thread(target=watch, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    with httpx.Client(base_url=server.url, timeout=5) as other:
        for _ in range(10):  # each must answer within the timeout while the streams are open
            assert other.get("/healthz").status_code == 200
            assert other.get(f"/v1/jobs/{job_id}").json()["state"] == "running"
            assert other.get(f"/v1/projects/{name}/jobs").status_code == 200
        wait_until(lambda: ": keep-alive" in raw)
        assert other.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    for thread in threads:
        thread.join(30)
    assert len(streams) == 6
    for found in streams:
        assert states(found)[-1] == "cancelled"  # type: ignore[arg-type]
    assert ": keep-alive" in raw


def wait_until(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_stopping_the_server_ends_open_streams_and_hands_the_running_job_back(
    fake_project: MakeProject, server: LiveServer, store: Store
) -> None:
    name = fake_project()
    job_id = queue_job(server.url, name, steps=200, step_seconds=0.5)
    wait_progress(server.url, job_id)
    ended = threading.Event()
    raw: list[str] = []

    def watch() -> None:
        read_stream(server.url, job_id, raw=raw)
        ended.set()

    thread = threading.Thread(target=watch)
    thread.start()
    wait_until(lambda: any(line.startswith("event: progress") for line in raw))
    server.process.terminate()
    # uvicorn waits for open responses without limit: an exit at all means the stream ended;
    # a clean exit means the worker then stopped and handed its running job back
    assert server.process.wait(timeout=60) == 0
    thread.join(10)
    assert ended.is_set()
    with store.read() as session:  # the server is gone: read the job from the store
        job = jobs.get_job(session, job_id)
        assert job.state in ("queued", "failed")
        assert "the worker stopped while the job ran" in job.message
