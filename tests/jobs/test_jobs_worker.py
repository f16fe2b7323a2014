"""The worker: jobs run in child processes that may crash, be killed or be cancelled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from jobs_fixtures import MakeProject, fake_plugin, fake_project

from fineloop import artifacts, threads
from fineloop.config import Settings, get_settings
from fineloop.jobs import store as jobs
from fineloop.jobs.train import TRAIN as TRAIN_STAGE
from fineloop.jobs.worker import Worker, child_env, worker_name
from fineloop.registry.versions import list_versions, resolve
from fineloop.store import Store
from fineloop.store.projects import get_project
from fineloop.store.schema import Job

__all__ = ["fake_plugin", "fake_project"]
SLOW = {"steps": 400, "step_seconds": 0.05}  # ~20 s unless stopped


@pytest.fixture
def worker(store: Store, settings: Settings) -> Iterator[Worker]:
    running = Worker(store, settings, poll_seconds=0.2, grace_seconds=5)
    running.start()
    yield running
    running.stop()


def queue(store: Store, name: str, **overrides: object) -> int:
    with store.write() as session:
        project = get_project(session, name)
        return jobs.create_job(session, project, "train", {"overrides": overrides}).id


def job_of(store: Store, job_id: int) -> Job:
    with store.read() as session:
        return jobs.get_job(session, job_id)


def wait_for(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def finished(store: Store, job_id: int, timeout: float = 60) -> Job:
    wait_for(lambda: job_of(store, job_id).state in jobs.FINISHED, timeout)
    return job_of(store, job_id)


def child_pid(store: Store, job_id: int) -> int:
    with store.read() as session:
        found = [e.data["pid"] for e in jobs.events(session, job_id) if "pid" in e.data]
    return int(found[0])


def training(store: Store, job_id: int) -> Callable[[], bool]:
    return lambda: job_of(store, job_id).progress > TRAIN_STAGE[0]  # the trainer reported a step


def version_numbers(store: Store, name: str) -> list[int]:
    with store.read() as session:
        return [v.number for v in list_versions(session, get_project(session, name).id)]


def champion(store: Store, name: str) -> int:
    with store.read() as session:
        return resolve(session, get_project(session, name), "champion").number


def test_the_worker_runs_a_queued_job_in_a_child_process(
    store: Store, settings: Settings, fake_project: MakeProject, worker: Worker
) -> None:
    name = fake_project()
    job_id = queue(store, name, gain=0.1)
    worker.wake()
    job = finished(store, job_id)
    assert job.state == "succeeded", job.error
    assert job.worker == worker.name
    assert child_pid(store, job_id) != os.getpid()
    assert version_numbers(store, name) == [0, 1] and champion(store, name) == 1


def test_a_child_killed_mid_run_fails_the_job_and_registers_nothing(
    store: Store, settings: Settings, fake_project: MakeProject, worker: Worker
) -> None:
    name = fake_project()
    job_id = queue(store, name, **SLOW)
    wait_for(training(store, job_id))
    os.kill(child_pid(store, job_id), signal.SIGKILL)
    job = finished(store, job_id)
    assert job.state == "failed"
    assert "killed by SIGKILL" in (job.error or "")
    assert version_numbers(store, name) == [0]
    assert champion(store, name) == 0  # the champion still resolves and serves
    scratch = artifacts.root(settings) / name / "tmp"
    wait_for(lambda: not list(scratch.iterdir()))  # removed just after the ending is recorded
    # and the worker lives on: the next job runs
    assert finished(store, queue(store, name, gain=0.1)).state == "succeeded"


def test_cancel_of_a_running_job_stops_its_child_within_seconds(
    store: Store, settings: Settings, fake_project: MakeProject, worker: Worker
) -> None:
    name = fake_project()
    job_id = queue(store, name, **SLOW)
    wait_for(training(store, job_id))
    with store.write() as session:
        jobs.request_cancel(session, job_id)
    job = finished(store, job_id, timeout=15)
    assert job.state == "cancelled", job.error
    assert version_numbers(store, name) == [0]


def test_cancel_of_a_queued_job_means_it_never_runs(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project()
    job_id = queue(store, name)
    with store.write() as session:
        jobs.request_cancel(session, job_id)
    idle = Worker(store, settings, poll_seconds=0.1)
    idle.start()
    time.sleep(0.5)
    idle.stop()
    job = job_of(store, job_id)
    assert (job.state, job.started_at) == ("cancelled", None)


def test_stopping_the_server_fails_the_running_job_with_the_reason(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project()
    server = Worker(store, settings, poll_seconds=0.1, grace_seconds=5)
    server.start()
    job_id = queue(store, name, **SLOW)
    wait_for(training(store, job_id))
    server.stop()
    job = job_of(store, job_id)
    assert (job.state, job.error) == ("failed", "the worker stopped while the job ran")
    assert version_numbers(store, name) == [0]


def test_jobs_left_running_by_a_dead_process_fail_when_a_worker_starts(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project()
    host = worker_name().rpartition(":")[0]
    with store.write() as session:
        project = get_project(session, name)
        dead = jobs.create_job(session, project, "train", {}, claimed_by=f"{host}:999999999").id
    starting = Worker(store, settings, poll_seconds=0.1)
    assert starting.start() == [dead]
    starting.stop()
    job = job_of(store, dead)
    assert job.state == "failed" and "is gone" in (job.error or "")


def test_a_jobs_child_process_sees_every_setting_of_its_worker(tmp_path: Path) -> None:
    """Settings may come from flags or a config file: the child gets them all spelled out."""
    worker = get_settings(
        data_dir=tmp_path,
        artifact_root="memory://bucket/root",
        artifact_options={"endpoint_url": "http://minio:9000"},
        artifact_cache_gb=None,
        mirror_checkpoints=False,
        train_nproc=3,
        train_launcher="accelerate",
        job_stale_seconds=12.5,
        max_batch_events=77,
    )
    script = "from fineloop.config import get_settings; print(get_settings().model_dump_json())"
    env = child_env(worker) | {"FINELOOP_CONFIG": ""}
    shown = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    spelled_out = worker.model_copy(update={"database_url": worker.resolved_database_url})
    assert Settings.model_validate_json(shown.stdout) == spelled_out


def test_training_children_get_openmps_default_wait_policy_back(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serving makes OpenMP threads passive; a job's child trains with the default."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(threads, "_set_here", False)
    threads.passive_for_serving()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in child_env(settings)

    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's own choice is kept
    monkeypatch.setattr(threads, "_set_here", False)
    threads.passive_for_serving()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert child_env(settings)["OMP_WAIT_POLICY"] == "ACTIVE"
