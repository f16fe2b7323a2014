"""Webhooks on job end and on champion moves, delivered to a real HTTP server in the test."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from jobs_fixtures import MakeProject, fake_plugin, fake_project

from conftest import free_port
from fineloop.config import Settings
from fineloop.jobs import store as jobs
from fineloop.jobs.runner import execute
from fineloop.jobs.sink import StoreSink
from fineloop.jobs.triggers import TriggerLoop
from fineloop.jobs.webhooks import CLAIM_STALE, MAX_CLAIMS, claim, deliver_pending, pending
from fineloop.registry import manage
from fineloop.store import Store
from fineloop.store.projects import get_project

__all__ = ["fake_plugin", "fake_project"]


class Receiver:
    """An HTTP server that keeps every POSTed JSON body; answers 500 to the first `fail`."""

    def __init__(self, fail: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.fail = fail
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                if receiver.fail > 0:
                    receiver.fail -= 1
                    self.send_response(500)
                else:
                    receiver.bodies.append(body)
                    receiver.headers.append(dict(self.headers))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[str]:
        return [body["event"] for body in self.bodies]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.server.shutdown()


def train(store: Store, settings: Settings, name: str, **overrides: object) -> int:
    with store.write() as session:
        project = get_project(session, name)
        job = jobs.create_job(session, project, "train", {"overrides": overrides}, claimed_by="t")
    execute(store, settings, job.id, StoreSink(store, job.id))
    return job.id


def webhook_events(store: Store, job_id: int) -> list[dict[str, Any]]:
    with store.read() as session:
        return [e.data for e in jobs.events(session, job_id) if e.kind == "webhook"]


def test_a_job_end_and_its_promotion_are_posted_once_and_recorded(
    store: Store, settings: Settings, fake_project: MakeProject, receiver: Receiver
) -> None:
    name = fake_project(webhook_url=receiver.url)
    job_id = train(store, settings, name, gain=0.1)
    made = deliver_pending(store)
    assert [m["status"] for m in made] == ["delivered", "delivered"]
    assert receiver.events() == ["promotion", "job.finished"]  # in the order they happened
    moved, ended = receiver.bodies
    assert (moved["project"], moved["version"], moved["previous"]) == (name, "v1", "v0")
    assert (moved["actor"], moved["job_id"], moved["gate"]["passed"]) == (
        f"job {job_id}",
        job_id,
        True,
    )
    assert (ended["job_id"], ended["state"], ended["version"]) == (job_id, "succeeded", "v1")
    assert ended["promoted"] is True and ended["gate"]["passed"] is True
    assert receiver.headers[1]["X-Fineloop-Delivery"] == f"job-{job_id}-finished"
    assert deliver_pending(store) == []  # each one once
    assert len(receiver.bodies) == 2
    recorded = webhook_events(store, job_id)
    assert [(e["delivery"], e["status"]) for e in recorded] == [
        (moved["delivery"], "sending"),
        (moved["delivery"], "delivered"),
        (f"job-{job_id}-finished", "sending"),
        (f"job-{job_id}-finished", "delivered"),
    ]

    with store.write() as session:  # a promotion by hand (here: back to v0)
        manage.promote(session, get_project(session, name), "v0", reason="compare", actor="ann")
    deliver_pending(store)
    last = receiver.bodies[-1]
    assert (last["event"], last["version"], last["previous"]) == ("promotion", "v0", "v1")
    assert (last["reason"], last["actor"]) == ("compare", "ann")


def test_failures_are_retried_then_recorded_and_never_touch_the_job(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    flaky = Receiver(fail=2)
    name = fake_project("flaky", webhook_url=flaky.url)
    job_id = train(store, settings, name, fail=True)
    made = deliver_pending(store, stop=threading.Event())
    assert made == [
        {"status": "delivered", "code": 204, "attempts": 3, "delivery": f"job-{job_id}-finished"}
    ]
    assert flaky.bodies[0]["state"] == "failed"
    assert "broke on purpose" in flaky.bodies[0]["error"]
    flaky.server.shutdown()

    gone = fake_project("gone", webhook_url=f"http://127.0.0.1:{free_port()}/hook")
    lost = train(store, settings, gone, gain=-0.1)  # not promoted: only the job end
    assert [m["status"] for m in deliver_pending(store, attempts=2)] == ["failed"]
    with store.read() as session:
        job = jobs.get_job(session, lost)
        messages = [e.message for e in jobs.events(session, lost) if e.kind == "webhook"]
    assert job.state == "succeeded"
    assert messages[-1].startswith("webhook: job.finished failed after 2 attempt(s): ConnectError")
    assert deliver_pending(store) == []  # a failed delivery is not retried forever


def test_a_claim_whose_process_died_is_sent_again_later(
    store: Store, settings: Settings, fake_project: MakeProject, receiver: Receiver
) -> None:
    name = fake_project(webhook_url=receiver.url)
    job_id = train(store, settings, name, gain=-0.1)  # not promoted: only the job end
    with store.read() as session:
        (notice,) = pending(session, datetime.now(UTC))
    assert claim(store, notice)  # ... and the process dies before posting

    assert deliver_pending(store) == []  # in flight for a while: nobody else sends it
    later = datetime.now(UTC) + CLAIM_STALE
    made = deliver_pending(store, now=later)
    assert [(m["delivery"], m["status"]) for m in made] == [(notice.key, "delivered")]
    assert [body["delivery"] for body in receiver.bodies] == [f"job-{job_id}-finished"]
    assert deliver_pending(store, now=later + CLAIM_STALE) == []  # delivered: done
    statuses = [e["status"] for e in webhook_events(store, job_id)]
    assert statuses == ["sending", "sending", "delivered"]

    # A delivery whose every claim died is given up after MAX_CLAIMS.
    other = train(store, settings, name, gain=-0.1)
    with store.read() as session:
        (stuck,) = pending(session, datetime.now(UTC))
    for _ in range(MAX_CLAIMS):
        assert claim(store, stuck, later)
        later += CLAIM_STALE
    assert deliver_pending(store, now=later) == []
    assert [e["status"] for e in webhook_events(store, other)] == ["sending"] * MAX_CLAIMS


def test_concurrent_deliverers_send_each_notice_once(
    store: Store, settings: Settings, fake_project: MakeProject, receiver: Receiver
) -> None:
    name = fake_project(webhook_url=receiver.url)
    ended = []
    for _ in range(3):
        with store.write() as session:  # queued then cancelled: an ending too
            job = jobs.create_job(session, get_project(session, name), "train", {})
            jobs.request_cancel(session, job.id)
            ended.append(f"job-{job.id}-finished")
    stores = [Store.open(settings, migrate_schema=False) for _ in range(3)]
    barrier = threading.Barrier(3)

    def deliver(index: int) -> None:
        barrier.wait()
        deliver_pending(stores[index])

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for opened in stores:
        opened.close()
    assert sorted(body["delivery"] for body in receiver.bodies) == sorted(ended)
    assert {body["state"] for body in receiver.bodies} == {"cancelled"}


def test_the_trigger_loop_delivers_by_itself(
    store: Store, settings: Settings, fake_project: MakeProject, receiver: Receiver
) -> None:
    name = fake_project(webhook_url=receiver.url)
    loop = TriggerLoop(store, interval=60, webhook_interval=0.1)
    loop.start()
    try:
        job_id = train(store, settings, name, gain=0.1)
        deadline = time.monotonic() + 30
        while len(receiver.bodies) < 2:
            assert time.monotonic() < deadline, receiver.bodies
            time.sleep(0.05)
    finally:
        loop.stop()
    assert {body["delivery"] for body in receiver.bodies} >= {f"job-{job_id}-finished"}
