"""The queue: claim the next job, hold it with heartbeats, give it back when its worker dies.

Claiming locks the row it takes: `SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL, so
workers on many machines never wait for, or take, the same job; on SQLite the write
transaction (BEGIN IMMEDIATE) is the lock. A job is held by (worker, attempt): heartbeats,
endings and recovery all name the attempt, so a run that lost its job (its worker was
declared dead and the job went to another) can no longer touch it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session

from fineloop.jobs import store as jobs
from fineloop.store.schema import Job, table


def has_queued(session: Session, kinds: Collection[str] | None = None) -> bool:
    """A cheap read before claiming: an idle worker must not take SQLite's write lock
    every poll just to find nothing."""
    query = select(Job.id).where(Job.state == jobs.QUEUED)
    if kinds is not None:
        query = query.where(Job.kind.in_(sorted(kinds)))
    return session.scalar(query.limit(1)) is not None


def claim_next(session: Session, worker: str, kinds: Collection[str] | None = None) -> Job | None:
    """Take the oldest queued job (of `kinds`) for `worker`, or None when there is none.

    Call inside a write transaction; the job is `running` under its new attempt number
    once that commits."""
    query = select(Job.id).where(Job.state == jobs.QUEUED)
    if kinds is not None:
        query = query.where(Job.kind.in_(sorted(kinds)))
    query = query.order_by(Job.created_at, Job.id).limit(1).with_for_update(skip_locked=True)
    job_id = session.scalar(query)
    if job_id is None or not jobs.claim(session, job_id, worker):
        return None
    return jobs.get_job(session, job_id)


def beat(session: Session, worker: str, held: Mapping[int, int]) -> list[int]:
    """Refresh the heartbeat of the jobs `worker` runs (job id -> attempt); return the ids
    it no longer holds (ended for it by another process, or given to another worker)."""
    rows = table(Job)
    at, lost = jobs.now(), []
    for job_id, attempt in held.items():
        statement = (
            update(rows)
            .where(rows.c.id == job_id, rows.c.state == jobs.RUNNING)
            .where(rows.c.worker == worker, rows.c.attempts == attempt)
            .values(heartbeat_at=at)
        )
        beaten = cast(CursorResult[Any], session.connection().execute(statement)).rowcount
        if beaten != 1 and not _ended_by(session, job_id, worker, attempt):
            lost.append(job_id)
    return lost


def _ended_by(session: Session, job_id: int, worker: str, attempt: int) -> bool:
    """Whether the run itself recorded the job's ending (endings written for a run by
    `give_back` clear the worker): its process is only exiting, so the job is not lost and
    the process must not be killed or told it was."""
    rows = table(Job)
    found = (
        session.connection()
        .execute(select(rows.c.state, rows.c.worker, rows.c.attempts).where(rows.c.id == job_id))
        .first()
    )
    return (
        found is not None
        and found.state in jobs.FINISHED
        and (
            found.worker,
            found.attempts,
        )
        == (worker, attempt)
    )


def _released(session: Session, job_id: int, state: str) -> str:
    """An ending written for a run (not by it) clears the worker: the run, if it still goes
    on somewhere, must learn at its next beat that it lost the job (see `_ended_by`)."""
    rows = table(Job)
    session.connection().execute(update(rows).where(rows.c.id == job_id).values(worker=None))
    return state


def give_back(session: Session, job: Job, reason: str) -> str | None:
    """The run of `job` (as read, under its current attempt) ended without an ending: queue
    the job again while attempts remain, else fail it; cancel it if a cancel was asked.

    Returns the job's new state, or None when the job had moved on meanwhile."""
    attempt = job.attempts
    if job.cancel_requested:
        ended = jobs.finish(session, job.id, jobs.CANCELLED, "cancelled", attempt=attempt)
        return _released(session, job.id, jobs.CANCELLED) if ended else None
    if attempt >= job.max_attempts:
        error = reason
        if job.max_attempts > 1:
            error = f"{reason}; no attempts left ({attempt} of {job.max_attempts} made)"
        ended = jobs.finish(
            session, job.id, jobs.FAILED, f"failed: {reason}", error=error, attempt=attempt
        )
        return _released(session, job.id, jobs.FAILED) if ended else None
    message = f"queued again for attempt {attempt + 1} of {job.max_attempts}: {reason}"
    rows = table(Job)
    statement = (
        update(rows)
        .where(rows.c.id == job.id, rows.c.state == jobs.RUNNING, rows.c.attempts == attempt)
        .values(state=jobs.QUEUED, worker=None, heartbeat_at=None, progress=0.0, message=message)
    )
    if cast(CursorResult[Any], session.connection().execute(statement)).rowcount != 1:
        return None
    data = {"state": jobs.QUEUED, "retry": attempt + 1, "reason": reason}
    jobs.add_event(session, job.id, "state", message, data)
    children = select(Job.id).where(Job.parent_id == job.id, Job.state == jobs.RUNNING)
    for child in session.scalars(children).all():  # a search's trials died with it
        jobs.finish(session, child, jobs.FAILED, f"failed: {reason}", error=reason)
    return jobs.QUEUED


def recover_orphans(session: Session, is_alive: Callable[[str], bool]) -> list[int]:
    """Give back the running jobs whose worker process is known to be gone (`is_alive`
    answers for this machine), without waiting for their heartbeat to go stale."""
    running = select(Job).where(Job.state == jobs.RUNNING, Job.parent_id.is_(None))
    recovered: list[int] = []
    for job in session.scalars(running.order_by(Job.id).with_for_update(skip_locked=True)).all():
        if job.worker is not None and is_alive(job.worker):
            continue
        reason = f"the process running it ({job.worker or 'unknown'}) is gone"
        if give_back(session, job, reason) is not None:
            recovered.append(job.id)
    return recovered


def recover_stale(session: Session, stale_seconds: float) -> list[int]:
    """Give back the running jobs whose worker stopped beating `stale_seconds` ago: it
    died, or its machine did. Rows another worker is recovering are skipped (locked)."""
    cutoff = jobs.now() - timedelta(seconds=stale_seconds)
    stale = select(Job).where(
        Job.state == jobs.RUNNING,
        Job.parent_id.is_(None),
        or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff),
    )
    recovered: list[int] = []
    for job in session.scalars(stale.order_by(Job.id).with_for_update(skip_locked=True)).all():
        last = f"{job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC" if job.heartbeat_at else "never"
        reason = (
            f"its worker {job.worker or '(unknown)'} stopped sending heartbeats "
            f"(last: {last}; a job is presumed lost after {stale_seconds:g} s)"
        )
        if give_back(session, job, reason) is not None:
            recovered.append(job.id)
    return recovered
