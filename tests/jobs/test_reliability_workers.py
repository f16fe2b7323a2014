"""Reliability: two standalone workers share one store and 200 tiny jobs; every job runs
exactly once. Each execution appends a line to a file, outside the store, so a job run
twice (or never) shows whatever the job rows say. Run on PostgreSQL (row locks with SKIP
LOCKED) and on SQLite (one writer at a time) through the same claim path."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobs_queue_kinds import RECORD, executions, queue_plugin
from jobs_workers import WorkerProcess
from sqlalchemy import func, select

from fineloop.config import Settings
from fineloop.jobs import store as jobs
from fineloop.schemas import ProjectCreate
from fineloop.store import Store
from fineloop.store.projects import create_project
from fineloop.store.schema import Job

__all__ = ["queue_plugin"]
JOBS = 200


@pytest.fixture
def two_workers(
    settings: Settings, tmp_path: Path, queue_plugin: None
) -> Iterator[list[WorkerProcess]]:
    started = [
        WorkerProcess(settings, tmp_path / f"worker-{n}.log", "--concurrency", "2") for n in (1, 2)
    ]
    yield started
    for worker in started:
        worker.kill()


def states(store: Store) -> dict[str, int]:
    with store.read() as session:
        rows = session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
    return {str(state): int(count) for state, count in rows}


def test_two_workers_run_each_of_200_jobs_exactly_once(
    store: Store, tmp_path: Path, two_workers: list[WorkerProcess]
) -> None:
    log = tmp_path / "executions.log"
    with store.write() as session:
        project = create_project(session, ProjectCreate(name="many", task="embedding"))
        ids = [
            jobs.create_job(session, project, RECORD, {"log": str(log)}, exclusive=False).id
            for _ in range(JOBS)
        ]
    deadline = time.monotonic() + 240
    while states(store).get("succeeded", 0) < JOBS:
        assert time.monotonic() < deadline, f"not done in time: {states(store)}"
        assert not states(store).get("failed"), states(store)
        time.sleep(0.2)
    assert [worker.terminate() for worker in two_workers] == [0, 0]  # a graceful stop
    assert all("stopped" in worker.log.read_text() for worker in two_workers)

    runs = executions(log)
    counts = Counter(job_id for job_id, _attempt, _worker in runs)
    assert counts == Counter(ids), "some job ran twice or never"
    assert len(runs) == JOBS
    names = {worker.name for worker in two_workers}
    with store.read() as session:
        rows = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(ids)))}
    for job_id, attempt, worker in runs:
        assert (attempt, rows[job_id].attempts, rows[job_id].worker) == (1, 1, worker)
    assert {worker for _job, _attempt, worker in runs} == names  # both took part
