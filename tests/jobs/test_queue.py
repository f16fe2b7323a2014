"""The queue in the store: claims that lock and skip, leases held by (worker, attempt),
and recovery of jobs whose worker stopped beating, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from conftest import POSTGRES_ADMIN_URL
from fineloop.config import Settings
from fineloop.jobs import queue
from fineloop.jobs import store as jobs
from fineloop.schemas import ProjectCreate
from fineloop.store import Store
from fineloop.store.projects import create_project, get_project
from fineloop.store.schema import Job


@pytest.fixture
def proj(store: Store) -> str:
    with store.write() as session:
        for name in ("p1", "p2", "p3", "p4"):
            create_project(session, ProjectCreate(name=name, task="embedding"))
    return "p1"


def new_job(store: Store, name: str = "p1", kind: str = "train", **kw: object) -> int:
    with store.write() as session:
        project = get_project(session, name)
        return jobs.create_job(session, project, kind, {}, **kw).id  # type: ignore[arg-type]


def job_of(store: Store, job_id: int) -> Job:
    with store.read() as session:
        return jobs.get_job(session, job_id)


def claim(store: Store, worker: str, kinds: list[str] | None = None) -> int | None:
    with store.write() as session:
        job = queue.claim_next(session, worker, kinds)
        return None if job is None else job.id


def age_heartbeat(store: Store, job_id: int, seconds: float) -> None:
    with store.write() as session:
        at = jobs.now() - timedelta(seconds=seconds)
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=at))


def test_claims_take_the_oldest_queued_job_of_the_wanted_kinds(store: Store, proj: str) -> None:
    first = new_job(store, "p1", "train")
    build = new_job(store, "p1", "build_snapshot")
    evaluation = new_job(store, "p2", "evaluate", exclusive=False)
    assert claim(store, "w1", ["evaluate"]) == evaluation
    assert claim(store, "w1", ["evaluate", "search"]) is None  # none of those left
    assert claim(store, "w2") == first
    assert claim(store, "w2") == build
    assert claim(store, "w2") is None
    job = job_of(store, first)
    assert (job.state, job.worker, job.attempts) == ("running", "w2", 1)


def test_a_claim_skips_the_row_another_claimer_holds(store: Store, settings: Settings) -> None:
    """Worker A has taken the oldest job but not committed yet. Worker B gets the next one:
    on PostgreSQL at once (SKIP LOCKED), on SQLite once A's write transaction ends."""
    with store.write() as session:
        for name in ("p1", "p2"):
            create_project(session, ProjectCreate(name=name, task="embedding"))
    first, second = new_job(store, "p1"), new_job(store, "p2")
    other = Store.open(settings, migrate_schema=False)
    got: list[int | None] = []
    done = threading.Event()

    def worker_b() -> None:
        got.append(claim(other, "b"))
        done.set()

    try:
        with store.write() as session:
            taken = queue.claim_next(session, "a")
            assert taken is not None and taken.id == first
            thread = threading.Thread(target=worker_b)
            thread.start()
            if POSTGRES_ADMIN_URL:  # not blocked by A's lock, and not handed A's job
                assert done.wait(10), "worker B waited for worker A's row lock"
                assert got == [second]
            else:
                time.sleep(0.3)
        thread.join(30)
    finally:
        other.close()
    assert got == [second]
    assert (job_of(store, first).worker, job_of(store, second).worker) == ("a", "b")


def test_a_lease_is_held_by_worker_and_attempt(store: Store, proj: str) -> None:
    job_id = new_job(store, max_attempts=2)
    assert claim(store, "w1") == job_id
    age_heartbeat(store, job_id, 30)
    with store.write() as session:
        assert queue.beat(session, "w1", {job_id: 1}) == []
        assert queue.beat(session, "w2", {job_id: 1}) == [job_id]  # not w2's job
    beaten = job_of(store, job_id).heartbeat_at
    assert beaten is not None and jobs.now() - beaten < timedelta(seconds=10)
    with store.write() as session:  # w1 was declared lost: the job is queued again
        assert queue.give_back(session, job_of(store, job_id), "test") == "queued"
    queued = job_of(store, job_id)
    assert (queued.state, queued.worker, queued.attempts) == ("queued", None, 1)
    assert claim(store, "w2") == job_id
    assert job_of(store, job_id).attempts == 2
    with store.write() as session:
        assert queue.beat(session, "w1", {job_id: 1}) == [job_id]  # w1 learns it lost it
        # the first run can no longer end the job; the second can
        assert not jobs.finish(session, job_id, "failed", "old run", error="x", attempt=1)
        assert jobs.finish(session, job_id, "succeeded", "done", attempt=2)
        # a beat between the run recording its ending and its process exiting: not lost
        assert queue.beat(session, "w2", {job_id: 2}) == []
        assert queue.beat(session, "w1", {job_id: 1}) == [job_id]
    other = new_job(store, max_attempts=1)
    assert claim(store, "w3") == other
    with store.write() as session:  # failed for w3 by a recoverer: w3's run lost it
        assert queue.give_back(session, job_of(store, other), "stale") == "failed"
        assert queue.beat(session, "w3", {other: 1}) == [other]
    messages = [e.message for e in events_of(store, job_id) if e.kind == "state"]
    assert messages[2] == "queued again for attempt 2 of 2: test"


def events_of(store: Store, job_id: int) -> list[jobs.JobEvent]:
    with store.read() as session:
        return jobs.events(session, job_id)


def test_stale_jobs_are_retried_failed_or_cancelled_as_their_attempts_allow(
    store: Store, proj: str
) -> None:
    retried = new_job(store, "p1", claimed_by="gone:1", max_attempts=2)
    spent = new_job(store, "p2", claimed_by="gone:1", max_attempts=1)
    cancelled = new_job(store, "p3", claimed_by="gone:1", max_attempts=2)
    alive = new_job(store, "p4", claimed_by="here:1", max_attempts=2)
    with store.write() as session:
        jobs.request_cancel(session, cancelled)
    for job_id in (retried, spent, cancelled):
        age_heartbeat(store, job_id, 120)
    age_heartbeat(store, alive, 5)
    with store.write() as session:
        recovered = queue.recover_stale(session, stale_seconds=60)
    assert sorted(recovered) == sorted([retried, spent, cancelled])
    assert job_of(store, retried).state == "queued"
    failed = job_of(store, spent)
    assert failed.state == "failed"
    assert "gone:1 stopped sending heartbeats" in (failed.error or "")
    assert job_of(store, cancelled).state == "cancelled"
    assert job_of(store, alive).state == "running"
    with store.write() as session:  # nothing is recovered twice
        assert queue.recover_stale(session, stale_seconds=60) == []
    # the retried job runs again and, once it spent its attempts, fails for good
    assert claim(store, "w") == retried
    age_heartbeat(store, retried, 120)
    with store.write() as session:
        assert queue.recover_stale(session, stale_seconds=60) == [retried]
    last = job_of(store, retried)
    assert last.state == "failed" and "no attempts left (2 of 2 made)" in (last.error or "")


def test_two_recoverers_racing_recover_each_job_once(
    store: Store, settings: Settings, proj: str
) -> None:
    ids = [new_job(store, name, claimed_by="gone:1", max_attempts=3) for name in ("p1", "p2")]
    for job_id in ids:
        age_heartbeat(store, job_id, 120)
    other = Store.open(settings, migrate_schema=False)
    found: list[list[int]] = []
    barrier = threading.Barrier(2)

    def recoverer(through: Store) -> None:
        barrier.wait()
        with through.write() as session:
            found.append(queue.recover_stale(session, stale_seconds=60))

    threads = [threading.Thread(target=recoverer, args=(s,)) for s in (store, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    other.close()
    assert sorted(found[0] + found[1]) == sorted(ids)
    for job_id in ids:
        retries = [e for e in events_of(store, job_id) if e.data.get("retry")]
        assert len(retries) == 1
        assert job_of(store, job_id).state == "queued"
