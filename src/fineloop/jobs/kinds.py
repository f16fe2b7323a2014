"""Job kinds besides training: build a snapshot; evaluate a version on a held-out split.

Queued through the API (`POST .../snapshots/build`, `POST .../evaluate`) and run by any
worker, in a child process, like training. Light at import: the task and its ML stack load
only when a job runs.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from fineloop import artifacts
from fineloop.config import Settings
from fineloop.errors import Invalid, NotFound
from fineloop.jobs import store as jobs
from fineloop.registry.bootstrap import ensure_base_version
from fineloop.registry.versions import CHAMPION, next_number, resolve
from fineloop.snapshots import build_and_publish, built_snapshot, get_snapshot, list_snapshots
from fineloop.store import Store
from fineloop.store.projects import get_project
from fineloop.store.schema import Job, Project, Snapshot
from fineloop.tasks import get_task
from fineloop.tasks.base import ProgressSink

SPLIT = "test"


def queue_snapshot_build(store: Store, project_name: str, *, seed: int | None = None) -> Job:
    """Queue a build of the project's snapshot (409 while one is queued or running)."""
    with store.write() as session:
        project = get_project(session, project_name)
        return jobs.create_job(session, project, jobs.BUILD_SNAPSHOT, {"seed": seed})


def queue_evaluation(
    store: Store, project_name: str, *, version: str = CHAMPION, snapshot: str | None = None
) -> Job:
    """Queue an evaluation of `version` (alias or number) on `snapshot` (default: the
    project's latest when the job runs). Unknown names are refused now, with a 404."""
    with store.write() as session:
        project = get_project(session, project_name)
        _check_version(session, project, version)
        snapshot_id = None if snapshot is None else get_snapshot(session, project, snapshot).id
        config = {"version": version, "snapshot": snapshot_id}
        return jobs.create_job(session, project, jobs.EVALUATE, config, exclusive=False)


def _check_version(session: Session, project: Project, ref: str) -> None:
    try:
        resolve(session, project, ref)
    except NotFound:
        if ref != CHAMPION or next_number(session, project.id) > 0:
            raise
        # never trained: the champion is the base model, registered as v0 when the job runs


def run_build_snapshot(
    store: Store, settings: Settings, job_id: int, sink: ProgressSink
) -> dict[str, Any]:
    """Build (or find, when nothing changed) and publish the project's snapshot."""
    job, project = _job(store, job_id)
    sink.progress(0.05, "building the snapshot")
    row = build_and_publish(
        store, settings, project.name, seed=job.config.get("seed"), label=f"job{job_id}"
    )
    with store.write() as session:
        jobs.set_snapshot(session, job_id, row.id)
    return {
        "snapshot_id": row.id,
        "splits": row.splits,
        "stats": row.stats,
        "summary": f"snapshot {row.id[:12]} built: {row.splits}",
    }


def run_evaluation(
    store: Store, settings: Settings, job_id: int, sink: ProgressSink
) -> dict[str, Any]:
    """Evaluate the version on the snapshot's test split; the metrics go to the result
    (and, as points at step 0, to the job's metric series)."""
    job, project = _job(store, job_id)
    task = get_task(project.task)
    ref = str(job.config.get("version") or CHAMPION)
    with store.write() as session:
        found = session.get(Project, project.id)
        assert found is not None
        ensure_base_version(session, found, task)
        version = resolve(session, found, ref)
        row = _snapshot(session, found, job.config.get("snapshot"))
    if row is None:
        sink.progress(0.05, "the project has no snapshot yet: building one")
        row = build_and_publish(store, settings, project.name, label=f"job{job_id}")
    with store.write() as session:
        jobs.set_snapshot(session, job_id, row.id)
    if not row.splits.get(SPLIT):
        raise Invalid(f"snapshot {row.id[:12]} has no {SPLIT} examples; nothing to evaluate on")
    sink.progress(0.3, f"evaluating v{version.number} on snapshot {row.id[:12]}")
    model = artifacts.fetch(settings, version.artifact_uri)  # a local copy of a URL root
    evaluation = task.evaluate(model, built_snapshot(row, settings).path, SPLIT)
    for name, value in evaluation.metrics.items():
        sink.metric(f"{SPLIT}_{name}", 0, float(value))
    primary = evaluation.metrics.get(evaluation.primary)
    shown = "n/a" if primary is None else f"{primary:.4f}"
    return {
        "version": f"v{version.number}",
        "version_id": version.id,
        "requested": ref,
        "snapshot_id": row.id,
        "split": SPLIT,
        "examples": len(evaluation.per_example),
        "primary": evaluation.primary,
        "metrics": evaluation.metrics,
        "summary": f"v{version.number} on the {SPLIT} split: {evaluation.primary} {shown}",
    }


def _job(store: Store, job_id: int) -> tuple[Job, Project]:
    with store.read() as session:
        job = jobs.get_job(session, job_id)
        project = session.get(Project, job.project_id)
    if project is None:
        raise NotFound(f"job {job_id}'s project is gone")
    return job, project


def _snapshot(session: Session, project: Project, snapshot_id: str | None) -> Snapshot | None:
    if snapshot_id is not None:
        return get_snapshot(session, project, snapshot_id)
    latest = list_snapshots(session, project.id)
    return latest[0] if latest else None
