"""The training pipeline of a job: snapshot -> train -> evaluate -> gate -> register.

It reads top to bottom like the loop it runs, and talks to the task only through the Task
protocol. Nothing is visible to anyone until the very last step: the candidate trains in a
scratch folder, is published to its version folder by one rename, and the registry row, the
aliases and the job's success are written in ONE transaction. A crash or kill before that
commit leaves no version and the champion untouched; the folder it may leave is removed by
the next run (see `_clear_orphan`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from fineloop import artifacts
from fineloop.config import Settings
from fineloop.jobs import store as jobs
from fineloop.jobs.sink import Stage
from fineloop.jobs.training_steps import evaluate_all, gate_decision, snapshot_for
from fineloop.registry.aliases import set_alias
from fineloop.registry.bootstrap import ensure_base_version
from fineloop.registry.gate import GateDecision
from fineloop.registry.versions import (
    CHALLENGER,
    CHAMPION,
    next_number,
    register_version,
    resolve,
)
from fineloop.store import Store
from fineloop.store.projects import training_policy_of
from fineloop.store.schema import Alias, ModelVersion, Project
from fineloop.tasks import get_task
from fineloop.tasks.base import JobCancelled, ProgressSink

BUILD, TRAIN, EVALUATE = (0.0, 0.15), (0.15, 0.8), (0.8, 0.97)


def run_training(
    store: Store, settings: Settings, job_id: int, sink: ProgressSink
) -> dict[str, Any]:
    """Train a candidate for the job's project from its champion; register it, gated."""
    with store.read() as session:
        job = jobs.get_job(session, job_id)
        project = session.get(Project, job.project_id)
        assert project is not None
        overrides = dict(job.config.get("overrides") or {})
    task = get_task(project.task)
    policy = training_policy_of(project)
    config = task.train_config({**policy.train, **overrides})
    with store.write() as session:
        project = session.get(Project, project.id)
        assert project is not None
        base = ensure_base_version(session, project, task)
        champion = resolve(session, project, CHAMPION)
    _check(sink)

    sink.progress(BUILD[0], "building the snapshot")
    snapshot = snapshot_for(store, settings, project, task, seed=policy.seed, label=f"job{job_id}")
    with store.write() as session:
        jobs.set_snapshot(session, job_id, snapshot.id)
    sink.log(f"snapshot {snapshot.id[:12]}: {snapshot.splits}")
    _check(sink)

    scratch = artifacts.scratch_dir(settings, project.name, f"job{job_id}")
    published: Path | None = None
    try:
        sink.progress(TRAIN[0], f"training from v{champion.number}")
        trained = task.train(
            snapshot.path, champion.artifact_uri, config, scratch, Stage(sink, *TRAIN, "training")
        )
        _check(sink)

        sink.progress(EVALUATE[0], "evaluating base, champion and candidate")
        evaluation = evaluate_all(task, snapshot.path, base, champion, trained)
        decision = gate_decision(evaluation, policy)
        sink.log(decision.reason)
        _check(sink)

        number = _next_free_number(store, settings, project)
        published = artifacts.publish(
            trained, artifacts.version_dir(settings, project.name, number)
        )
        with store.write() as session:
            result = _register(
                session,
                job_id,
                project.id,
                number=number,
                artifact=published,
                base=base,
                champion=champion,
                snapshot_id=snapshot.id,
                config={"train": config.model_dump(mode="json"), "overrides": overrides},
                metrics=evaluation.as_metrics(decision),
                decision=decision,
                auto_promote=policy.auto_promote,
            )
        published = None
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if published is not None:  # published but never registered
            shutil.rmtree(published, ignore_errors=True)


def _register(
    session: Session,
    job_id: int,
    project_id: int,
    *,
    number: int,
    artifact: Path,
    base: ModelVersion,
    champion: ModelVersion,
    snapshot_id: str,
    config: dict[str, Any],
    metrics: dict[str, Any],
    decision: GateDecision,
    auto_promote: bool,
) -> dict[str, Any]:
    """The one transaction that makes the run visible: version, aliases, job success.

    The candidate replaces the champion only if it passed the gate against the version that
    is champion NOW (a manual promotion during training voids the comparison)."""
    project = session.get(Project, project_id)
    assert project is not None
    actor = f"job {job_id}"
    current = session.get(Alias, (project_id, CHAMPION), with_for_update=True)
    moved = current is None or current.version_id != champion.id
    promote = decision.passed and auto_promote and not moved
    gate = decision.as_dict() | {"promoted": promote, "auto_promote": auto_promote}
    if decision.passed and moved:
        gate["note"] = "the champion changed during training; promote by hand if still better"
    version = register_version(
        session,
        project,
        number=number,
        artifact_uri=str(artifact),
        base_model=base.base_model,
        parent_id=champion.id,
        snapshot_id=snapshot_id,
        job_id=job_id,
        config=config,
        metrics=metrics,
        gate=gate,
    )
    set_alias(session, project, CHALLENGER, version, reason=f"trained by {actor}", actor=actor)
    if promote:
        set_alias(session, project, CHAMPION, version, reason=decision.reason, actor=actor)
    stays = f"v{champion.number}" if current is None else _label(session, current.version_id)
    result = {
        "version": f"v{number}",
        "version_id": version.id,
        "snapshot_id": snapshot_id,
        "promoted": promote,
        "champion": f"v{number}" if promote else stays,
        "compared_with": f"v{champion.number}",
        "gate": gate,
        "metrics": metrics,
    }
    message = (
        f"v{number} registered and promoted to champion"
        if promote
        else f"v{number} registered; champion stays {stays}"
    )
    if not jobs.finish(
        session, job_id, jobs.SUCCEEDED, message, result=result, version_id=version.id
    ):
        raise JobCancelled  # cancelled (or failed by recovery) meanwhile: roll back
    return result


def _label(session: Session, version_id: int) -> str:
    version = session.get(ModelVersion, version_id)
    return f"v{version.number}" if version is not None else "?"


def _check(sink: ProgressSink) -> None:
    if sink.cancelled():
        raise JobCancelled


def _next_free_number(store: Store, settings: Settings, project: Project) -> int:
    """The next version number, its folder cleared of what a killed run may have left."""
    with store.read() as session:
        number = next_number(session, project.id)
    _clear_orphan(artifacts.version_dir(settings, project.name, number))
    return number


def _clear_orphan(folder: Path) -> None:
    """A version folder without a registry row was published by a run killed before its
    commit. Only one training job of a project runs at a time, so nobody else owns it."""
    if folder.exists():
        shutil.rmtree(folder)
