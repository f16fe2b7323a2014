"""Training triggers: after N new feedback events, on a schedule, debounced, one at a time."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
from fastapi.testclient import TestClient
from jobs_fixtures import MakeProject, fake_plugin, fake_project
from jobs_live import server, wait_state

from conftest import LiveServer
from fineloop.config import Settings
from fineloop.feedback.events import LabelEvent, RatingEvent
from fineloop.jobs import store as jobs
from fineloop.jobs.runner import execute
from fineloop.jobs.sink import StoreSink
from fineloop.jobs.triggers import TriggerLoop, check_all, fire
from fineloop.operations import store_feedback
from fineloop.store import Store
from fineloop.store.projects import get_project
from fineloop.store.schema import Job

__all__ = ["fake_plugin", "fake_project", "server"]
SECOND, MINUTE = timedelta(seconds=1), timedelta(minutes=1)


def labels(store: Store, name: str, count: int, tag: str) -> None:
    events = [
        LabelEvent(kind="label", input=f"{tag} {i}", items=[f"item-{i}"]) for i in range(count)
    ]
    store_feedback(store, name, events)


def training_jobs(store: Store, name: str) -> list[Job]:
    with store.read() as session:
        found = jobs.list_jobs(session, get_project(session, name).id)
    return sorted((job for job in found if job.kind == "train"), key=lambda job: job.id)


def run(store: Store, settings: Settings, job_id: int, **overrides: object) -> Job:
    """Run a queued job in this process, as a worker would."""
    with store.write() as session:
        assert jobs.claim(session, job_id, "test-worker")
    execute(store, settings, job_id, StoreSink(store, job_id))
    with store.read() as session:
        return jobs.get_job(session, job_id)


def test_n_new_feedback_events_start_one_job_after_the_debounce_and_it_says_why(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project(trigger={"feedback_count": 5, "debounce_seconds": 60})  # 18 labels
    start = datetime.now(UTC)
    assert fire(store, name, start) is None  # the 5th event is not a minute old yet
    first = fire(store, name, start + 61 * SECOND)
    assert first is not None and first.state == "queued"
    why = "trigger: 18 new feedback events since the project was created"
    assert first.config["trigger"]["reason"] == why
    assert first.config["trigger"]["rule"] == "feedback_count"
    with store.read() as session:
        assert [e.message for e in jobs.events(session, first.id)] == ["queued", why]
    assert fire(store, name, start + 2 * MINUTE) is None  # one is queued already
    assert run(store, settings, first.id).state == "succeeded"

    later = start + 60 * MINUTE
    assert fire(store, name, later) is None  # nothing new since its snapshot
    labels(store, name, 4, "new")
    neutral = [RatingEvent(kind="rating", input=f"meh {i}", value=3) for i in range(5)]
    store_feedback(store, name, neutral)  # reward 0: below the quality threshold
    assert fire(store, name, later) is None  # 4 qualifying events are not 5
    labels(store, name, 1, "one more")
    second = fire(store, name, later)
    assert second is not None
    assert second.config["trigger"]["reason"] == (
        f"trigger: 5 new feedback events since job {first.id}"
    )
    assert [job.id for job in training_jobs(store, name)] == [first.id, second.id]


def test_an_interval_trigger_trains_on_schedule_when_there_is_new_feedback(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project(trigger={"interval_minutes": 10, "debounce_seconds": 0})
    start = datetime.now(UTC)
    assert check_all(store, start + 9 * MINUTE) == []
    created = check_all(store, start + 11 * MINUTE)
    assert len(created) == 1
    job = run(store, settings, created[0])
    assert job.state == "succeeded", job.error
    assert job.config["trigger"]["rule"] == "interval"
    assert job.config["trigger"]["reason"].startswith("trigger: schedule every 10 min")
    assert check_all(store, start + 40 * MINUTE) == []  # due, but nothing new to learn
    labels(store, name, 1, "fresh")
    assert check_all(store, job.created_at + 9 * MINUTE) == []  # not due yet
    assert len(check_all(store, job.created_at + 11 * MINUTE)) == 1


def test_a_trigger_firing_while_a_training_job_of_the_project_runs_starts_nothing_new(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    slow = {"steps": 400, "step_seconds": 0.05}  # ~20 s unless cancelled
    name = fake_project(train=slow, trigger={"feedback_count": 3, "debounce_seconds": 0})
    busy = fire(store, name)
    assert busy is not None
    with store.write() as session:
        assert jobs.claim(session, busy.id, "test-worker")
    training = threading.Thread(
        target=execute, args=(store, settings, busy.id, StoreSink(store, busy.id))
    )
    training.start()
    try:
        while jobs_progress(store, busy.id) <= 0.15:  # the trainer runs
            time.sleep(0.05)
        labels(store, name, 10, "during")
        future = datetime.now(UTC) + 60 * MINUTE
        assert fire(store, name, future) is None
        assert race(settings, name, future) == [None, None, None]
        loop = TriggerLoop(store, interval=0.2)
        assert loop.tick() == []
        assert [job.id for job in training_jobs(store, name)] == [busy.id]
    finally:
        with store.write() as session:
            jobs.request_cancel(session, busy.id)
        training.join(30)
    assert training_jobs(store, name)[0].state == "cancelled"
    # free again: several deciders at once still start exactly one job
    started = race(settings, name, datetime.now(UTC) + 60 * MINUTE)
    assert sum(job_id is not None for job_id in started) == 1
    assert len(training_jobs(store, name)) == 2


def jobs_progress(store: Store, job_id: int) -> float:
    with store.read() as session:
        return jobs.get_job(session, job_id).progress


def race(settings: Settings, name: str, now: datetime, deciders: int = 3) -> list[int | None]:
    """`fire` from several stores (engines, connections) at once, as separate processes do."""
    stores = [Store.open(settings, migrate_schema=False) for _ in range(deciders)]
    barrier = threading.Barrier(deciders)
    found: list[int | None] = [None] * deciders

    def decide(index: int) -> None:
        barrier.wait()
        job = fire(stores[index], name, now)
        found[index] = job.id if job is not None else None

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(deciders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for opened in stores:
        opened.close()
    return found


def test_a_project_without_enough_data_is_not_triggered(
    store: Store, fake_project: MakeProject
) -> None:
    name = fake_project(examples=2, trigger={"feedback_count": 1, "debounce_seconds": 0})
    assert check_all(store) == []
    assert training_jobs(store, name) == []


def test_the_server_retrains_by_itself_once_enough_feedback_arrived(
    store: Store, fake_project: MakeProject, server: LiveServer
) -> None:
    name = fake_project(examples=0, trigger={"feedback_count": 6, "debounce_seconds": 0})
    batch = [{"kind": "label", "input": f"q{i}", "items": [f"i{i}"]} for i in range(6)]
    posted = httpx.post(f"{server.url}/v1/projects/{name}/feedback/batch", json={"events": batch})
    assert posted.status_code in (200, 201), posted.text
    deadline = time.monotonic() + 60
    while not (found := httpx.get(f"{server.url}/v1/projects/{name}/jobs").json()):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert found[0]["config"]["trigger"]["reason"] == (
        "trigger: 6 new feedback events since the project was created"
    )
    done = wait_state(server.url, found[0]["id"], jobs.FINISHED)
    assert (done["state"], done["version"]) == ("succeeded", "v1")
    aliases = httpx.get(f"{server.url}/v1/projects/{name}/aliases").json()
    assert {a["alias"]: a["version"] for a in aliases}["champion"] == "v1"


def test_trigger_policies_are_validated(client: TestClient, project: str) -> None:
    def patch(policy: dict[str, object]) -> httpx.Response:
        return client.patch(f"/v1/projects/{project}", json={"training_policy": policy})

    good = patch({"trigger": {"feedback_count": 50, "debounce_seconds": 30}})
    assert good.status_code == 200, good.text
    assert good.json()["training_policy"]["trigger"] == {
        "feedback_count": 50,
        "interval_minutes": None,
        "debounce_seconds": 30,
    }
    for bad in (
        {"trigger": {"feedback_count": 0}},
        {"trigger": {"every": 5}},
        {"webhook_url": "ftp://example.com/hook"},
    ):
        response = patch(bad)
        assert response.status_code == 422, (bad, response.text)
