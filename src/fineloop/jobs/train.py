"""The training pipeline of a job: snapshot -> train -> evaluate -> gate -> register.

It reads top to bottom like the loop it runs, and talks to the task only through the Task
protocol. Nothing is visible to anyone until the very last step: the candidate trains in a
scratch folder (on one process or several, see `distributed`), is published to its version
folder (one rename; on a URL root an upload completed by a marker, see `artifacts`), and the
registry row, the aliases and the job's success are written in ONE transaction. A crash or
kill before that commit leaves no version and the champion untouched; the folder it may
leave is removed by the next run (see `_next_free_number`).

With the project's `refit` policy, a candidate that passed the gate is trained once more on
train + validation before that transaction, and the refit is what gets registered (see
`refit`); it publishes and commits exactly like a candidate. When the project's review
queue is ranked by disagreement, the chosen model's answers to the queued inputs are
recorded in that same transaction (`review_answers`).

Each step reports its wall time (`phase_seconds/build`, `/train`, `/evaluate`, `/refit`,
`/review`)
and, for a task that encodes a corpus, how many texts it encoded and reused (`fineloop.tasks.
encode_counts`): the numbers a slow job is diagnosed with.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from fineloop import artifacts
from fineloop.config import Settings
from fineloop.jobs import distributed
from fineloop.jobs import store as jobs
from fineloop.jobs.checkpoint_mirror import mirrored
from fineloop.jobs.refit import Chosen, refit_after_gate
from fineloop.jobs.review_answers import candidate_answers, record_answers
from fineloop.jobs.runner import job_folder
from fineloop.jobs.sink import Stage
from fineloop.jobs.training_steps import evaluate_all, gate_decision, snapshot_for
from fineloop.policies import TrainingPolicy
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
from fineloop.tasks.base import BuiltSnapshot, JobCancelled, ProgressSink, Task
from fineloop.tasks.encode_counts import counting, report

BUILD, TRAIN, EVALUATE = (0.0, 0.15), (0.15, 0.8), (0.8, 0.97)
# With refit on, training leaves room for a second fit after the gate (evaluations, refit).
REFIT_TRAIN, REFIT_EVALUATE = (0.15, 0.5), (0.5, 0.97)


def run_training(
    store: Store, settings: Settings, job_id: int, sink: ProgressSink
) -> dict[str, Any]:
    """Train a candidate for the job's project from its champion; register it, gated."""
    with store.read() as session:
        job = jobs.get_job(session, job_id)
        project = session.get(Project, job.project_id)
        assert project is not None
        overrides = dict(job.config.get("overrides") or {})
        earlier = job.snapshot_id  # set by an earlier attempt: a retry keeps its data
        launch = distributed.launch_of(settings, job.config)
    task = get_task(project.task)
    policy = training_policy_of(project)
    config = task.train_config({**policy.train, **overrides})
    base, champion, snapshot = starting_point(
        store,
        settings,
        sink,
        job_id,
        project,
        task,
        policy,
        reuse=earlier,
        at=BUILD[0],
        overrides=overrides,
    )
    _check(sink)

    # The same folder on every attempt, so a retry finds the checkpoints a killed run left;
    # the runner removes it once the job has ended.
    scratch = job_folder(settings, project.name, job_id)
    scratch.mkdir(parents=True, exist_ok=True)
    train_stage, evaluate_stage = (
        (REFIT_TRAIN, REFIT_EVALUATE) if policy.refit else (TRAIN, EVALUATE)
    )
    sink.progress(train_stage[0], f"training from v{champion.number}")
    started = time.perf_counter()
    with mirrored(settings, project.name, job_id, scratch, sink):
        trained, ran = distributed.train(
            task,
            snapshot.path,
            artifacts.fetch(settings, champion.artifact_uri),
            config,
            scratch,
            Stage(sink, *train_stage, "training"),
            launch=launch,
            log=distributed.log_path(settings, job_id),
        )
    sink.metric("phase_seconds/train", 0, round(time.perf_counter() - started, 3))
    _check(sink)
    candidate = Candidate(
        trained, {"train": config.model_dump(mode="json"), "overrides": overrides, "launch": ran}
    )
    return evaluate_and_register(
        store,
        settings,
        sink,
        job_id,
        project,
        task,
        policy,
        base,
        champion,
        snapshot,
        candidate,
        stage=evaluate_stage,
    )


def starting_point(
    store: Store,
    settings: Settings,
    sink: ProgressSink,
    job_id: int,
    project: Project,
    task: Task,
    policy: TrainingPolicy,
    *,
    reuse: str | None,
    at: float,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[ModelVersion, ModelVersion, BuiltSnapshot]:
    """The base, the champion to train from and the job's snapshot (built now, or the one
    an earlier attempt recorded): where a training or search job starts."""
    with store.write() as session:
        found = session.get(Project, project.id)
        assert found is not None
        base = ensure_base_version(session, found, task)
        champion = resolve(session, found, CHAMPION)
    _check(sink)
    sink.progress(at, "building the snapshot")
    started = time.perf_counter()
    with counting() as counts:  # the builder may encode the catalog to mine negatives
        snapshot = snapshot_for(
            store,
            settings,
            project,
            task,
            seed=policy.seed,
            label=f"job{job_id}",
            reuse=reuse,
            train_overrides=overrides,
        )
    report(sink, counts)
    sink.metric("phase_seconds/build", 0, round(time.perf_counter() - started, 3))
    with store.write() as session:
        jobs.set_snapshot(session, job_id, snapshot.id)
    sink.log(f"snapshot {snapshot.id[:12]}: {snapshot.splits}")
    return base, champion, snapshot


@dataclass(frozen=True)
class Candidate:
    """A trained model folder, the config its version records, and extra result fields."""

    folder: Path
    config: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)


def evaluate_and_register(
    store: Store,
    settings: Settings,
    sink: ProgressSink,
    job_id: int,
    project: Project,
    task: Task,
    policy: TrainingPolicy,
    base: ModelVersion,
    champion: ModelVersion,
    snapshot: BuiltSnapshot,
    candidate: Candidate,
    *,
    stage: tuple[float, float] = EVALUATE,
) -> dict[str, Any]:
    """Evaluate a trained candidate against base and champion, gate it, refit it if the
    policy says so and it passed, publish the chosen folder and register it: how a training
    job ends, and a search job with its best trial."""
    sink.progress(stage[0], "evaluating base, champion and candidate")
    started = time.perf_counter()
    with counting() as counts:
        evaluation = evaluate_all(
            task, snapshot.path, base, champion, candidate.folder, settings=settings
        )
    report(sink, counts)
    sink.metric("phase_seconds/evaluate", 0, round(time.perf_counter() - started, 3))
    decision = gate_decision(evaluation, policy)
    sink.log(decision.reason)
    _check(sink)
    chosen = Chosen(candidate.folder, evaluation.as_metrics(decision))
    if policy.refit and not decision.passed:
        sink.log("refit: skipped, the candidate did not pass the gate")
    elif policy.refit:
        refit_stage = (stage[0] + 0.15 * (stage[1] - stage[0]), stage[1])
        chosen = refit_after_gate(
            task,
            settings,
            sink,
            snapshot=snapshot.path,
            champion=champion,
            trained=candidate.folder,
            train_config=candidate.config["train"],
            comparison=evaluation,
            decision=decision,
            out_dir=job_folder(settings, project.name, job_id).with_name(f"job{job_id}-refit"),
            stage=refit_stage,
        )
    refit = {} if chosen.record is None else {"refit": chosen.record}
    with counting() as counts:
        answers = candidate_answers(store, task, project, chosen.folder, snapshot.path, sink)
    report(sink, counts)
    _check(sink)
    flush = getattr(sink, "flush", None)
    if callable(flush):  # the run's metrics and logs land before its final state event
        flush()

    number = _next_free_number(store, settings, project)
    published = artifacts.publish(
        settings, chosen.folder, artifacts.version_location(settings, project.name, number)
    )
    registered = False
    try:
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
                config=candidate.config | (chosen.config or {}),
                metrics=chosen.metrics | refit,
                decision=decision,
                auto_promote=policy.auto_promote,
                summary=candidate.summary | refit,
            )
            record_answers(session, project.id, f"v{number}", answers)
        registered = True
        return result
    finally:
        if not registered:  # published but never registered
            artifacts.remove(settings, published)


def _register(
    session: Session,
    job_id: int,
    project_id: int,
    *,
    number: int,
    artifact: str,
    base: ModelVersion,
    champion: ModelVersion,
    snapshot_id: str,
    config: dict[str, Any],
    metrics: dict[str, Any],
    decision: GateDecision,
    auto_promote: bool,
    summary: dict[str, Any] | None = None,
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
        artifact_uri=artifact,
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
    } | (summary or {})
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
    # A version folder without a registry row was published by a run killed before its
    # commit. Only one training job of a project runs at a time, so nobody else owns it.
    artifacts.remove(settings, artifacts.version_location(settings, project.name, number))
    return number
