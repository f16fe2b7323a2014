"""Workers and retries: a job whose worker died is run again by another, a worker that
lost a job stops its run, a stopped worker hands its job back. The fake task trains."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta

import pytest
from jobs_fixtures import MakeProject, fake_plugin, fake_project
from sqlalchemy import update
from test_jobs_worker import child_pid, finished, job_of, training, version_numbers, wait_for
from typer.testing import CliRunner

from fineloop import artifacts
from fineloop.cli import app
from fineloop.config import Settings
from fineloop.jobs import queue
from fineloop.jobs import store as jobs
from fineloop.jobs.service import start_training
from fineloop.jobs.worker import Worker
from fineloop.store import Store
from fineloop.store.schema import Job

__all__ = ["fake_plugin", "fake_project"]
STEPS = {"steps": 40, "step_seconds": 0.05}  # about two seconds of training


@pytest.fixture
def fast(settings: Settings) -> Settings:
    """Heartbeats every 0.2 s; a job is lost after 1 s without one."""
    return settings.model_copy(update={"job_heartbeat_seconds": 0.2, "job_stale_seconds": 1.0})


@pytest.fixture
def workers(store: Store, fast: Settings) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def start(store: Store, settings: Settings, started: list[Worker]) -> Worker:
    worker = Worker(store, settings, poll_seconds=0.1, grace_seconds=5)
    worker.start()
    started.append(worker)
    return worker


def messages(store: Store, job_id: int) -> list[str]:
    with store.read() as session:
        return [event.message for event in jobs.events(session, job_id)]


def test_a_job_whose_worker_died_elsewhere_is_retried_by_another_worker(
    store: Store, fast: Settings, fake_project: MakeProject, workers: list[Worker]
) -> None:
    name = fake_project(max_attempts=2)
    job_id = start_training(store, name, {"gain": 0.1}).id
    with store.write() as session:  # a worker on another machine takes it, then dies
        assert queue.claim_next(session, "elsewhere:1") is not None
        at = jobs.now() - timedelta(seconds=30)
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=at))
    worker = start(store, fast, workers)
    job = finished(store, job_id)
    assert job.state == "succeeded", job.error
    assert (job.attempts, job.max_attempts, job.worker) == (2, 2, worker.name)
    retry = "queued again for attempt 2 of 2: its worker elsewhere:1 stopped sending heartbeats"
    assert any(m.startswith(retry) for m in messages(store, job_id))
    assert version_numbers(store, name) == [0, 1]


def test_a_worker_that_lost_its_job_stops_the_run_and_the_job_runs_once_more(
    store: Store, fast: Settings, fake_project: MakeProject, workers: list[Worker]
) -> None:
    name = fake_project(max_attempts=2)
    worker = start(store, fast, workers)
    job_id = start_training(store, name, STEPS).id
    wait_for(training(store, job_id))
    first = child_pid(store, job_id)
    with store.write() as session:  # as another worker's recovery would, had this one stalled
        assert queue.give_back(session, job_of(store, job_id), "declared lost") == "queued"
    job = finished(store, job_id)
    assert job.state == "succeeded", job.error
    assert job.attempts == 2
    assert f"attempt 1 stopped: {worker.name} no longer holds the job" in messages(store, job_id)
    with pytest.raises(ProcessLookupError):
        os.kill(first, 0)
    assert version_numbers(store, name) == [0, 1]  # registered once


def test_a_stopped_worker_hands_its_job_back_to_the_next_worker(
    store: Store, fast: Settings, fake_project: MakeProject, workers: list[Worker]
) -> None:
    name = fake_project(max_attempts=2)
    first = start(store, fast, workers)
    job_id = start_training(store, name, STEPS).id
    wait_for(training(store, job_id))
    first.stop()
    handed = job_of(store, job_id)
    assert (handed.state, handed.attempts, handed.worker) == ("queued", 1, None)
    assert "the worker stopped while the job ran" in handed.message
    second = start(store, fast, workers)
    job = finished(store, job_id)
    assert (job.state, job.attempts, job.worker) == ("succeeded", 2, second.name)
    assert version_numbers(store, name) == [0, 1]


def test_the_worker_command_refuses_unknown_kinds(settings: Settings) -> None:
    env = {"FINELOOP_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(app, ["worker", "--kinds", "train,nope"], env=env)
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "unknown job kind(s): nope" in out
    assert "installed here: build_snapshot, evaluate, search, train" in out


def test_a_starting_worker_clears_the_folders_of_ended_jobs_only(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project(max_attempts=2)
    ended = start_training(store, name).id
    with store.write() as session:  # e.g. cancelled while queued for its retry
        jobs.request_cancel(session, ended)
    waiting = start_training(store, name).id
    tmp = artifacts.root(settings) / name / "tmp"
    for folder in (f"job{ended}/.work", f"job{ended}-0a1b2c3d", f"job{waiting}/.work"):
        (tmp / folder).mkdir(parents=True)
    idle = Worker(store, settings, kinds=["evaluate"])  # leaves the training job queued
    idle.start()
    idle.stop()
    assert sorted(path.name for path in tmp.iterdir()) == [f"job{waiting}"]
    assert (tmp / f"job{waiting}" / ".work").is_dir()
