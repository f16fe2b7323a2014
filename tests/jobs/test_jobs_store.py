"""The job state machine: create, claim (atomically), finish, cancel, recover; the sink."""

from __future__ import annotations

import threading

import pytest

from fineloop.errors import Conflict, NotFound
from fineloop.jobs import queue
from fineloop.jobs import store as jobs
from fineloop.jobs.sink import StoreSink
from fineloop.schemas import ProjectCreate
from fineloop.store import Store
from fineloop.store.projects import create_project, get_project
from fineloop.store.schema import Job


@pytest.fixture
def proj(store: Store) -> str:
    with store.write() as session:
        create_project(session, ProjectCreate(name="p1", task="embedding"))
        create_project(session, ProjectCreate(name="p2", task="embedding"))
    return "p1"


def new_job(store: Store, name: str = "p1", **kw: object) -> int:
    with store.write() as session:
        return jobs.create_job(session, get_project(session, name), "train", {}, **kw).id  # type: ignore[arg-type]


def state_of(store: Store, job_id: int) -> Job:
    with store.read() as session:
        return jobs.get_job(session, job_id)


def event_states(store: Store, job_id: int) -> list[str]:
    with store.read() as session:
        return [e.data["state"] for e in jobs.events(session, job_id) if e.kind == "state"]


def test_a_job_goes_queued_running_succeeded_with_an_event_each(store: Store, proj: str) -> None:
    job_id = new_job(store)
    assert state_of(store, job_id).state == "queued"
    with store.write() as session:
        assert jobs.claim(session, job_id, "w1")
        assert not jobs.claim(session, job_id, "w2")  # running jobs cannot be claimed again
    running = state_of(store, job_id)
    assert (running.state, running.worker, running.attempts) == ("running", "w1", 1)
    assert running.started_at is not None
    with store.write() as session:
        assert jobs.finish(session, job_id, "succeeded", "done", result={"x": 1})
        assert not jobs.finish(session, job_id, "failed", "again")  # final states stay final
    done = state_of(store, job_id)
    assert (done.state, done.progress, done.result) == ("succeeded", 1.0, {"x": 1})
    assert done.finished_at is not None
    assert event_states(store, job_id) == ["queued", "running", "succeeded"]


def test_a_second_train_job_of_a_project_is_refused_while_one_is_active(
    store: Store, proj: str
) -> None:
    first = new_job(store)
    with pytest.raises(jobs.JobBusy) as refused:
        new_job(store)
    assert refused.value.status == 409
    assert refused.value.body()["job_id"] == first
    assert f"job {first} (queued)" in refused.value.message
    other = new_job(store, "p2")  # another project is not blocked
    with store.write() as session:
        jobs.claim(session, first, "w")
    with pytest.raises(jobs.JobBusy):
        new_job(store)
    with store.write() as session:
        jobs.finish(session, first, "failed", "failed", error="boom")
    assert new_job(store) > other  # once it ended, a new one may start


def test_two_claimers_racing_for_each_job_produce_exactly_one_winner(
    store: Store, settings: object, proj: str
) -> None:
    ids = [new_job(store, name) for name in ("p1", "p2")]
    other = Store.open(settings, migrate_schema=False)  # type: ignore[arg-type]
    wins: dict[int, list[str]] = {job_id: [] for job_id in ids}
    barrier = threading.Barrier(2)

    def claimer(name: str, through: Store) -> None:
        for job_id in ids:
            barrier.wait()
            with through.write() as session:
                if jobs.claim(session, job_id, name):
                    wins[job_id].append(name)

    threads = [
        threading.Thread(target=claimer, args=("a", store)),
        threading.Thread(target=claimer, args=("b", other)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    other.close()
    assert all(len(winners) == 1 for winners in wins.values()), wins
    for job_id, winners in wins.items():
        assert state_of(store, job_id).worker == winners[0]
        assert event_states(store, job_id) == ["queued", "running"]


def test_cancel_queued_ends_it_at_once_and_running_only_flags_it(store: Store, proj: str) -> None:
    queued = new_job(store)
    with store.write() as session:
        assert jobs.request_cancel(session, queued).state == "cancelled"
        assert not jobs.claim(session, queued, "w")  # a cancelled job is never claimed
    running = new_job(store, claimed_by="cli")
    with store.write() as session:
        job = jobs.request_cancel(session, running)
    assert (job.state, job.cancel_requested) == ("running", True)
    with store.write() as session:
        # a job cancelled while it finished must not count as succeeded
        assert not jobs.finish(session, running, "succeeded", "done")
        assert jobs.finish(session, running, "cancelled", "cancelled")
        assert jobs.request_cancel(session, running).state == "cancelled"  # idempotent
    failed = new_job(store, claimed_by="cli")
    with store.write() as session:
        jobs.finish(session, failed, "failed", "failed", error="x")
    with pytest.raises(Conflict, match="already failed"), store.write() as session:
        jobs.request_cancel(session, failed)
    with pytest.raises(NotFound), store.write() as session:
        jobs.request_cancel(session, 9999)


def test_jobs_of_dead_workers_are_failed_on_recovery(store: Store, proj: str) -> None:
    dead = new_job(store, claimed_by="here:1")
    alive = new_job(store, "p2", claimed_by="here:2")
    with store.write() as session:
        failed = queue.recover_orphans(session, lambda worker: worker == "here:2")
    assert failed == [dead]
    gone = state_of(store, dead)
    assert gone.state == "failed"
    assert "here:1" in (gone.error or "") and "gone" in (gone.error or "")
    assert state_of(store, alive).state == "running"


def test_store_sink_writes_progress_events_metrics_and_reads_cancel(
    store: Store, proj: str
) -> None:
    job_id = new_job(store, claimed_by="w")
    clock = [0.0]
    sink = StoreSink(store, job_id, interval=0.5, clock=lambda: clock[0])
    sink.progress(0.1, "starting")  # the first report is written at once
    assert state_of(store, job_id).progress == pytest.approx(0.1)
    sink.metric("loss", 1, 2.0)
    sink.metric("loss", 2, 1.5)
    sink.log("hello")
    sink.progress(0.4, "training")
    assert state_of(store, job_id).progress == pytest.approx(0.1)  # throttled: not yet
    clock[0] = 1.0
    sink.metric("eval_ndcg", 2, 0.7)  # past the interval: everything pending goes out
    job = state_of(store, job_id)
    assert (job.progress, job.message) == (pytest.approx(0.4), "training")
    assert job.heartbeat_at is not None
    with store.read() as session:
        series = jobs.metric_series(session, job_id)
        logs = [e.message for e in jobs.events(session, job_id) if e.kind == "log"]
    assert [(p["step"], p["value"]) for p in series["loss"]] == [(1, 2.0), (2, 1.5)]
    assert [p["value"] for p in series["eval_ndcg"]] == [0.7]
    assert logs == ["hello"]
    assert not sink.cancelled()
    with store.write() as session:
        jobs.request_cancel(session, job_id)
    assert not sink.cancelled()  # read at most every interval
    clock[0] = 2.0
    assert sink.cancelled()
    sink.log("bye")
    sink.close()
    with store.read() as session:
        assert [e.message for e in jobs.events(session, job_id)][-1] == "bye"
