"""The job state machine in the store: queued -> running -> succeeded | failed | cancelled.

Every transition is one conditional UPDATE (`WHERE state = <expected>`) whose row count says
whether it happened, so two workers claiming one job, or a cancel racing a finish, each get
a clear winner without locks held across a run. Each transition leaves a `state` event.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from fineloop.errors import Conflict, NotFound
from fineloop.store.schema import Job, JobEvent, JobMetric, ModelVersion, Project, table

QUEUED, RUNNING = "queued", "running"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)
FINISHED = (SUCCEEDED, FAILED, CANCELLED)
TRAIN = "train"
SEARCH, TRIAL = "search", "trial"  # a hyperparameter search, and each of its trials
# Kinds that register versions of a project: never two of them active at once.
EXCLUSIVE = {TRAIN: (TRAIN, SEARCH), SEARCH: (TRAIN, SEARCH)}
BUILD_SNAPSHOT, EVALUATE = "build_snapshot", "evaluate"


class JobBusy(Conflict):
    """A project already has a job of this kind queued or running; the body names it."""

    def __init__(self, message: str, job_id: int) -> None:
        super().__init__(message, field="project")
        self.job_id = job_id

    def body(self) -> dict[str, Any]:
        return super().body() | {"job_id": self.job_id}


def now() -> datetime:
    return datetime.now(UTC)


def create_job(
    session: Session,
    project: Project,
    kind: str,
    config: dict[str, Any],
    *,
    claimed_by: str | None = None,
    max_attempts: int = 1,
    exclusive: bool = True,
) -> Job:
    """Queue a job (or, with `claimed_by`, start it at once in that worker).

    An `exclusive` kind never has two active jobs in one project: the project row is locked
    first, so two creators on PostgreSQL queue up (SQLite serializes write transactions
    already). `max_attempts` > 1 lets a job whose worker died run again (jobs.queue)."""
    session.execute(select(Project.id).where(Project.id == project.id).with_for_update())
    active = (
        None
        if not exclusive
        else session.scalar(
            select(Job)
            .where(Job.project_id == project.id, Job.kind.in_(EXCLUSIVE.get(kind, (kind,))))
            .where(Job.state.in_(ACTIVE))
            .order_by(Job.id)
            .limit(1)
        )
    )
    if active is not None:
        raise JobBusy(
            f"project {project.name!r} already has {active.kind} job {active.id} "
            f"({active.state}); "
            f"wait for it or cancel it (POST /v1/jobs/{active.id}/cancel)",
            active.id,
        )
    at = now()
    job = Job(
        project_id=project.id,
        kind=kind,
        state=QUEUED if claimed_by is None else RUNNING,
        config=config,
        progress=0.0,
        message="queued" if claimed_by is None else "started",
        attempts=0 if claimed_by is None else 1,
        max_attempts=max_attempts,
        worker=claimed_by,
        heartbeat_at=None if claimed_by is None else at,
        cancel_requested=False,
        result={},
        created_at=at,
        started_at=None if claimed_by is None else at,
    )
    session.add(job)
    session.flush()
    add_event(session, job.id, "state", job.state, {"state": job.state, "worker": claimed_by})
    return job


def get_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"unknown job {job_id}", field="job")
    return job


def list_jobs(
    session: Session, project_id: int, *, state: str | None = None, limit: int = 50
) -> list[Job]:
    """The project's jobs, newest first."""
    query = select(Job).where(Job.project_id == project_id)
    if state is not None:
        query = query.where(Job.state == state)
    return list(session.scalars(query.order_by(Job.id.desc()).limit(limit)))


def _transition(session: Session, job_id: int, expected: tuple[str, ...], **values: Any) -> bool:
    jobs = table(Job)
    statement = update(jobs).where(jobs.c.id == job_id, jobs.c.state.in_(expected)).values(**values)
    result = cast(CursorResult[Any], session.connection().execute(statement))
    return result.rowcount == 1


def claim(session: Session, job_id: int, worker: str) -> bool:
    """Move one queued job to running for `worker`; False when someone else got it first."""
    at = now()
    won = _transition(
        session,
        job_id,
        (QUEUED,),
        state=RUNNING,
        worker=worker,
        started_at=at,
        heartbeat_at=at,
        message="started",
        attempts=table(Job).c.attempts + 1,
    )
    if won:
        add_event(session, job_id, "state", RUNNING, {"state": RUNNING, "worker": worker})
    return won


def finish(
    session: Session,
    job_id: int,
    state: str,
    message: str,
    *,
    error: str | None = None,
    result: dict[str, Any] | None = None,
    version_id: int | None = None,
    attempt: int | None = None,
) -> bool:
    """End a running job; False (nothing written) when it was not running any more.

    `succeeded` also requires that no cancel was requested: a job cancelled during its last
    step must not register anything, so the caller rolls its transaction back on False.
    With `attempt`, only that attempt is ended (a run whose job was queued again and taken
    by another worker meanwhile must not end the new run)."""
    if state not in FINISHED:
        raise ValueError(f"{state!r} is not a final state")
    values: dict[str, Any] = {"state": state, "message": message, "finished_at": now()}
    if state == SUCCEEDED:
        values["progress"] = 1.0
    if error is not None:
        values["error"] = error
    if result is not None:
        values["result"] = result
    if version_id is not None:
        values["version_id"] = version_id
    jobs = table(Job)
    statement = update(jobs).where(jobs.c.id == job_id, jobs.c.state == RUNNING)
    if state == SUCCEEDED:
        statement = statement.where(jobs.c.cancel_requested.is_(False))
    if attempt is not None:
        statement = statement.where(jobs.c.attempts == attempt)
    done = cast(CursorResult[Any], session.connection().execute(statement.values(**values)))
    if done.rowcount != 1:
        return False
    data: dict[str, Any] = {"state": state}
    if error is not None:
        data["error"] = error
    add_event(session, job_id, "state", message, data)
    _finish_children(session, job_id, state)
    return True


def _finish_children(session: Session, job_id: int, state: str) -> None:
    """A search's trials run in its process: when it ends, any still running end with it
    (a killed process cannot end them itself)."""
    children = select(Job.id).where(Job.parent_id == job_id, Job.state == RUNNING)
    for child in session.scalars(children).all():
        ending = CANCELLED if state == CANCELLED else FAILED
        reason = f"job {job_id}, which ran it, ended ({state})"
        finish(session, child, ending, reason, error=None if ending == CANCELLED else reason)


def request_cancel(session: Session, job_id: int) -> Job:
    """Cancel a queued job at once; ask a running one to stop (its worker ends it)."""
    job = get_job(session, job_id)
    if job.state == QUEUED and _transition(
        session, job_id, (QUEUED,), state=CANCELLED, message="cancelled", finished_at=now()
    ):
        add_event(session, job_id, "state", "cancelled before it started", {"state": CANCELLED})
    elif _transition(session, job_id, (RUNNING,), cancel_requested=True):
        add_event(session, job_id, "cancel", "cancel requested", {})
    else:
        session.refresh(job)
        if job.state in (SUCCEEDED, FAILED):
            raise Conflict(f"job {job_id} already {job.state}; there is nothing to cancel")
    session.refresh(job)
    return job


def set_snapshot(session: Session, job_id: int, snapshot_id: str) -> None:
    jobs = table(Job)
    session.execute(update(jobs).where(jobs.c.id == job_id).values(snapshot_id=snapshot_id))


def cancel_requested(session: Session, job_id: int) -> bool:
    return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def add_event(
    session: Session, job_id: int, kind: str, message: str, data: dict[str, Any] | None = None
) -> None:
    session.add(JobEvent(job_id=job_id, kind=kind, message=message, data=data or {}, at=now()))


def add_metrics(session: Session, job_id: int, points: list[tuple[str, int, float]]) -> None:
    if points:
        at = now()
        rows = [
            {"job_id": job_id, "name": n, "step": s, "value": v, "at": at} for n, s, v in points
        ]
        session.execute(table(JobMetric).insert(), rows)


def events(session: Session, job_id: int, *, after: int = 0, limit: int = 1000) -> list[JobEvent]:
    query = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after)
    return list(session.scalars(query.order_by(JobEvent.id).limit(limit)))


def metric_series(session: Session, job_id: int) -> dict[str, list[dict[str, Any]]]:
    """name -> points in step order (and write order within one step)."""
    query = select(JobMetric).where(JobMetric.job_id == job_id)
    series: dict[str, list[dict[str, Any]]] = {}
    for row in session.scalars(query.order_by(JobMetric.name, JobMetric.step, JobMetric.id)):
        point = {"step": row.step, "value": row.value, "at": row.at.isoformat()}
        series.setdefault(row.name, []).append(point)
    return series


def job_public(session: Session, job: Job) -> dict[str, Any]:
    project = session.get(Project, job.project_id)
    version = session.get(ModelVersion, job.version_id) if job.version_id else None
    return {
        "id": job.id,
        "project": project.name if project else None,
        "kind": job.kind,
        "parent_id": job.parent_id,
        "state": job.state,
        "progress": job.progress,
        "message": job.message,
        "config": job.config,
        "result": job.result,
        "error": job.error,
        "snapshot_id": job.snapshot_id,
        "version": f"v{version.number}" if version else None,
        "version_id": job.version_id,
        "cancel_requested": job.cancel_requested,
        "worker": job.worker,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "heartbeat_at": job.heartbeat_at.isoformat() if job.heartbeat_at else None,
    }


def event_public(event: JobEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "kind": event.kind,
        "message": event.message,
        "data": event.data,
        "at": event.at.isoformat(),
    }
