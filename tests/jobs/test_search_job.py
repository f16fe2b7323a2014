"""Hyperparameter search jobs on the fake task: the study in fineloop's database, trials as
child jobs, pruning, the best trial registered, cancel, and the CLI.

The fake task's validation score rises with `gain` (skill + gain, plus a fixed offset per
query), so which trial is best, and which one a pruner stops, follows from the values.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
from jobs_fake_task import skill_of
from jobs_fixtures import MakeProject, fake_plugin, fake_project
from sqlalchemy import select, text
from typer.testing import CliRunner

from fineloop import artifacts
from fineloop.cli import app
from fineloop.config import Settings
from fineloop.jobs import store as jobs
from fineloop.jobs.runner import execute
from fineloop.jobs.search import open_storage
from fineloop.jobs.search_space import start_search
from fineloop.jobs.sink import StoreSink
from fineloop.jobs.worker import Worker, child_env
from fineloop.registry.versions import list_versions, resolve
from fineloop.store import Store
from fineloop.store.projects import get_project
from fineloop.store.schema import Job

__all__ = ["fake_plugin", "fake_project"]

GAIN = {"gain": {"type": "float", "low": -0.2, "high": 0.3}}


def run_search(store: Store, settings: Settings, name: str, **search: Any) -> Job:
    job = start_search(store, name, search, claimed_by="t")
    execute(store, settings, job.id, StoreSink(store, job.id))
    with store.read() as session:
        return jobs.get_job(session, job.id)


def trials_of(store: Store, job_id: int) -> list[Job]:
    with store.read() as session:
        rows = session.scalars(select(Job).where(Job.parent_id == job_id).order_by(Job.id))
        return list(rows)


def study_trials(settings: Settings, name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials as Optuna reads them back from fineloop's database."""
    storage = open_storage(settings.resolved_database_url)
    try:
        return optuna.load_study(study_name=name, storage=storage).trials
    finally:
        storage.engine.dispose()


def test_a_search_keeps_its_study_in_the_store_records_trials_and_registers_the_best(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project(skill=0.5)
    enqueue = [{"gain": 0.25}, {"gain": -0.1}]
    job = run_search(
        store, settings, name, space=GAIN, n_trials=4, pruner={"kind": "none"}, enqueue=enqueue
    )
    assert job.state == "succeeded", job.error
    summary = job.result["search"]
    study_name = f"fineloop-{name}-job{job.id}"
    assert summary["study"] == study_name
    assert summary["trials"] == {"complete": 4, "pruned": 0, "failed": 0}

    # the study is in fineloop's own database, beside its tables
    with store.read() as session:
        names = session.execute(text("SELECT study_name FROM studies")).scalars().all()
    assert names == [study_name]
    found = study_trials(settings, study_name)
    assert [t.state for t in found] == [optuna.trial.TrialState.COMPLETE] * 4
    assert [t.params["gain"] for t in found[:2]] == [0.25, -0.1]  # the enqueued first

    # each trial is a child job with its values, metric series and validation score
    rows = trials_of(store, job.id)
    assert [(r.kind, r.state, r.parent_id) for r in rows] == [("trial", "succeeded", job.id)] * 4
    for row, trial in zip(rows, found, strict=True):
        assert row.config["params"] == trial.params and row.config["trial"] == trial.number
        assert row.config["train"]["gain"] == trial.params["gain"]
        assert row.result["value"] == trial.value and row.result["state"] == "complete"
        assert row.snapshot_id == job.snapshot_id and trial.user_attrs["job_id"] == row.id
        with store.read() as session:
            series = jobs.metric_series(session, row.id)
        assert [p["value"] for p in series["loss"]] == [1.0, 0.5, 1 / 3, 0.25]
        assert series["eval_score"][0]["value"] == 0.5 + trial.params["gain"]
    values = [t.value for t in found]
    gains = [t.params["gain"] for t in found]
    assert values.index(max(values)) == gains.index(max(gains))  # the score follows the gain

    # the best trial's model is registered like a training run, with the chosen values
    best = max(found, key=lambda t: t.value or 0.0)
    assert summary["best_trial"] == best.number and summary["params"] == best.params
    assert summary["best_trial_job"] == rows[best.number].id
    with store.read() as session:
        project = get_project(session, name)
        v0, v1 = list_versions(session, project.id)
        champion = resolve(session, project, "champion")
        search_series = jobs.metric_series(session, job.id)
    assert job.version_id == v1.id and v1.job_id == job.id and v1.parent_id == v0.id
    assert abs(skill_of(v1.artifact_uri) - (0.5 + best.params["gain"])) < 1e-9
    assert v1.config["search"]["study"] == study_name
    assert v1.config["search"]["params"] == best.params
    assert v1.config["train"]["gain"] == best.params["gain"]
    assert v1.metrics["candidate"]["score"] > v1.metrics["champion"]["score"]
    assert v1.gate["passed"] and champion.id == v1.id  # gate and auto-promote as in training
    assert [p["step"] for p in search_series["trial_score"]] == [0, 1, 2, 3]
    assert search_series["best_score"][-1]["value"] == best.value
    assert not list((artifacts.root(settings) / name / "tmp").glob("job*"))


def test_the_median_pruner_stops_a_trial_below_the_earlier_ones(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project(skill=0.5)
    pruner = {"kind": "median", "startup_trials": 1}
    enqueue = [{"gain": 0.3}, {"gain": -0.2}]
    job = run_search(store, settings, name, space=GAIN, n_trials=2, pruner=pruner, enqueue=enqueue)
    assert job.state == "succeeded", job.error
    good, bad = trials_of(store, job.id)
    assert good.state == "succeeded" and good.result["state"] == "complete"
    assert bad.state == "cancelled" and bad.result["state"] == "pruned"
    assert bad.message == "pruned at evaluation 1: validation score 0.3000"
    states = [t.state for t in study_trials(settings, job.result["search"]["study"])]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    assert job.result["search"]["params"] == {"gain": 0.3}
    assert job.result["search"]["trials"] == {"complete": 1, "pruned": 1, "failed": 0}


def test_a_search_whose_trials_are_all_pruned_or_failed_fails_and_registers_nothing(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project(skill=0.5)
    pruned = run_search(
        store, settings, name, space=GAIN, n_trials=2, pruner={"kind": "threshold", "lower": 2}
    )
    assert pruned.state == "failed"
    assert pruned.error == "no trial finished (2 pruned, 0 failed), so there is nothing to register"
    assert [r.result["state"] for r in trials_of(store, pruned.id)] == ["pruned", "pruned"]
    broken = run_search(
        store, settings, name, space=GAIN, n_trials=1, train={"fail": True}, pruner={"kind": "none"}
    )
    assert broken.state == "failed"
    assert "first failure: RuntimeError: the fake trainer broke on purpose" in (broken.error or "")
    (row,) = trials_of(store, broken.id)
    assert row.state == "failed" and "broke on purpose" in (row.error or "")
    with store.read() as session:
        assert [v.number for v in list_versions(session, get_project(session, name).id)] == [0]


def test_cancel_mid_search_ends_the_running_trial_and_the_search(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project(skill=0.5)
    job = start_search(
        store,
        name,
        {"space": GAIN, "n_trials": 5, "train": {"steps": 400, "step_seconds": 0.01}},
        claimed_by="t",
    )
    done: list[str] = []
    runner = threading.Thread(
        target=lambda: done.append(execute(store, settings, job.id, StoreSink(store, job.id)))
    )
    runner.start()
    deadline = time.monotonic() + 60
    while not any(r.state == "running" for r in trials_of(store, job.id)):
        assert time.monotonic() < deadline and runner.is_alive()
        time.sleep(0.05)
    with store.write() as session:
        jobs.request_cancel(session, job.id)
    runner.join(60)
    assert done == ["cancelled"]
    rows = trials_of(store, job.id)
    assert len(rows) == 1 and rows[0].state == "cancelled"
    assert rows[0].message == "the search was cancelled"
    states = {t.state for t in study_trials(settings, f"fineloop-{name}-job{job.id}")}
    assert states == {optuna.trial.TrialState.FAIL}  # nothing left running in the study
    with store.read() as session:
        assert [v.number for v in list_versions(session, get_project(session, name).id)] == [0]
    assert not list((artifacts.root(settings) / name / "tmp").glob("job*"))


def test_cancel_reaches_a_search_running_in_a_worker_process(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project(skill=0.5)
    slow = {"space": GAIN, "n_trials": 5, "train": {"steps": 2000, "step_seconds": 0.01}}
    job = start_search(store, name, slow)
    # a grace long enough for the search's own ending under load (after 10 s a SIGKILL
    # would leave its Optuna trial running: the retry's business, not this test's)
    worker = Worker(store, settings, poll_seconds=0.2, grace_seconds=120)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while not any(r.state == "running" for r in trials_of(store, job.id)):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with store.write() as session:
            jobs.request_cancel(session, job.id)
        while True:
            with store.read() as session:
                ended = jobs.get_job(session, job.id)
            if ended.state in jobs.FINISHED:
                break
            assert time.monotonic() < deadline + 150
            time.sleep(0.1)
    finally:
        worker.stop()
    assert ended.state == "cancelled", ended.error
    assert [r.state for r in trials_of(store, job.id)] == ["cancelled"]
    trials = study_trials(settings, f"fineloop-{name}-job{job.id}")
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL]


def test_a_search_whose_worker_died_resumes_its_study_and_registers_the_best_trial(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    """kill -9 of the job's process while its worker is gone too: the next worker queues
    the search again; the study goes on from the trials that ended, and the best one (whose
    model died with the first process) is trained again and registered."""
    name = fake_project(skill=0.5)
    space = GAIN | {"step_seconds": {"type": "categorical", "choices": [0.0, 0.05]}}
    first = {"gain": 0.3, "step_seconds": 0.0}  # the best, done before the kill
    slow = {"gain": 0.1, "step_seconds": 0.05}  # running when the process dies
    last = {"gain": 0.2, "step_seconds": 0.0}
    body = {"space": space, "n_trials": 3, "enqueue": [first, slow, last], "train": {"steps": 200}}
    gone = subprocess.Popen(["true"])  # a worker whose process no longer exists
    gone.wait()
    dead = f"{socket.gethostname()}:{gone.pid}"
    job = start_search(store, name, body | {"pruner": {"kind": "none"}}, claimed_by=dead)
    command = [sys.executable, "-m", "fineloop.jobs.run", str(job.id)]
    process = subprocess.Popen(command, env=child_env(settings))
    deadline = time.monotonic() + 60
    while [r.state for r in trials_of(store, job.id)] != ["succeeded", "running"]:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.kill()
    process.wait()
    worker = Worker(store, settings, poll_seconds=0.2)
    assert worker.start() == [job.id]  # given back: queued again for attempt 2
    try:
        while True:
            with store.read() as session:
                ended = jobs.get_job(session, job.id)
            if ended.state in jobs.FINISHED:
                break
            assert time.monotonic() < deadline + 60
            time.sleep(0.1)
    finally:
        worker.stop()
    assert ended.state == "succeeded", ended.error
    assert ended.attempts == 2
    assert [r.state for r in trials_of(store, job.id)] == ["succeeded", "failed", "succeeded"]
    trials = study_trials(settings, f"fineloop-{name}-job{job.id}")
    done = optuna.trial.TrialState
    assert [t.state for t in trials] == [done.COMPLETE, done.FAIL, done.COMPLETE]
    assert [t.params for t in trials] == [first, slow, last]
    assert ended.result["search"]["best_trial"] == 0
    with store.read() as session:
        v1 = list_versions(session, get_project(session, name).id)[-1]
        events = [e.message for e in jobs.events(session, job.id)]
    assert v1.number == 1 and abs(skill_of(v1.artifact_uri) - 0.8) < 1e-9
    assert any("retraining" in message for message in events)


def test_a_search_and_a_training_job_of_one_project_never_run_together(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project()
    queued = start_search(store, name, {"space": GAIN})
    with store.write() as session:
        project = get_project(session, name)
        try:
            jobs.create_job(session, project, jobs.TRAIN, {})
        except jobs.JobBusy as busy:
            assert busy.job_id == queued.id
            assert f"already has search job {queued.id}" in busy.message
        else:
            raise AssertionError("a training job was queued beside a search")


def test_cli_search_in_the_foreground_prints_trials_and_the_gate(
    settings: Settings, store: Store, fake_project: MakeProject, tmp_path: Path
) -> None:
    name = fake_project(skill=0.5)
    env = {"FINELOOP_DATA_DIR": str(settings.data_dir)}
    if settings.database_url:
        env["FINELOOP_DATABASE_URL"] = settings.database_url
    space = '{"gain": {"type": "float", "low": 0.1, "high": 0.2}}'
    args = ["tune", name, "--trials", "2", "--space", space, "--pruner", "none", "--foreground"]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "trials" in out and "complete" in out
    assert "job 1 succeeded: v1 registered and promoted to champion (champion: v1)" in out
    queued = CliRunner().invoke(app, ["tune", name, "--space", space], env=env)
    assert queued.exit_code == 0 and "queued search job 4" in queued.output
    bad = CliRunner().invoke(app, ["tune", name, "--space", '{"gian": null}'], env=env)
    assert bad.exit_code == 1
