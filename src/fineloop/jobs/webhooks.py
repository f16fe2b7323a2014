"""Webhooks: a JSON POST to a project's `webhook_url` when a job ends or the champion moves.

Deliveries are read from the store (an outbox), not sent by the code that ended the job or
moved the alias: so every ending is covered (success in the job's process, a crash noticed
by a worker, a cancel of a queued job, ...) as is every champion move (the gate, a person,
a rollout, a rollback), and a slow receiver never holds up a job. The loop that runs
triggers calls `deliver_pending` every few seconds.

Each delivery is claimed by writing a `webhook` event ("sending ...") on its job under the
job row's lock, then POSTed (short timeout, a few attempts on network errors, 429 and
5xx), then its outcome is written as a second `webhook` event. So one delivery is attempted
by one process at a time however many loops run. A claim with no outcome after
`CLAIM_STALE` belongs to a process that died between claim and outcome: the delivery is
claimed again (up to `MAX_CLAIMS` times), so delivery is at least once and a receiver may
see a `delivery` twice — deduplicate on it. A champion move is recorded on the job that
trained the version (else the project's latest job). Only what happened in the last
`lookback` is considered, so setting a URL does not replay history. Every delivery is
signed with the project's secret (Standard Webhooks; see `webhook_signing`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from fineloop import __version__
from fineloop.jobs import store as jobs
from fineloop.jobs.webhook_signing import secret_of, signed_headers
from fineloop.registry.versions import CHAMPION
from fineloop.store import Store
from fineloop.store.projects import training_policy_of
from fineloop.store.schema import AliasChange, Job, JobEvent, ModelVersion, Project

log = logging.getLogger("fineloop.webhooks")
LOOKBACK = timedelta(minutes=10)
TIMEOUT = 5.0
ATTEMPTS = 3
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# Longer than one delivery can take (ATTEMPTS posts of TIMEOUT plus backoff), with room.
CLAIM_STALE = timedelta(seconds=2 * ATTEMPTS * TIMEOUT + 30)
MAX_CLAIMS = 3


@dataclass(frozen=True)
class Notice:
    """One delivery to make: `key` names it (and is sent as `delivery`)."""

    key: str
    url: str
    at: datetime
    job_id: int | None  # where the delivery is recorded
    payload: dict[str, Any]
    project_id: int | None = None  # whose secret signs it


def _label(session: Session, version_id: int | None) -> str | None:
    version = session.get(ModelVersion, version_id) if version_id is not None else None
    return f"v{version.number}" if version is not None else None


def _job_notice(session: Session, project: Project, url: str, job: Job) -> Notice:
    key = f"job-{job.id}-finished"
    result = job.result or {}
    payload = {
        "event": "job.finished",
        "delivery": key,
        "project": project.name,
        "job_id": job.id,
        "kind": job.kind,
        "state": job.state,
        "message": job.message,
        "error": job.error,
        "version": _label(session, job.version_id),
        "promoted": result.get("promoted"),
        "champion": result.get("champion"),
        "gate": result.get("gate"),
        "trigger": (job.config or {}).get("trigger"),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
    assert job.finished_at is not None
    return Notice(key, url, job.finished_at, job.id, payload, project.id)


def _move_notice(session: Session, project: Project, url: str, change: AliasChange) -> Notice:
    key = f"champion-{change.id}"
    version = session.get(ModelVersion, change.version_id) if change.version_id else None
    record = version.job_id if version is not None else None
    if record is None or session.get(Job, record) is None:
        latest = select(Job.id).where(Job.project_id == project.id).order_by(Job.id.desc())
        record = session.scalar(latest.limit(1))
    payload = {
        "event": "promotion",
        "delivery": key,
        "project": project.name,
        "alias": change.alias,
        "version": _label(session, change.version_id),
        "previous": _label(session, change.previous_version_id),
        "reason": change.reason,
        "actor": change.actor,
        "job_id": version.job_id if version is not None else None,
        "gate": version.gate if version is not None else None,
        "at": change.at.isoformat(),
    }
    return Notice(key, url, change.at, record, payload, project.id)


def _settled(session: Session, job_ids: set[int], now: datetime) -> set[str]:
    """Deliveries on these jobs not to claim now: made or failed (an outcome is recorded),
    claimed within `CLAIM_STALE` (in flight), or already claimed `MAX_CLAIMS` times."""
    if not job_ids:
        return set()
    rows = session.execute(
        select(JobEvent.data, JobEvent.at).where(
            JobEvent.job_id.in_(job_ids), JobEvent.kind == "webhook"
        )
    )
    claims: dict[str, list[datetime]] = {}
    done: set[str] = set()
    for data, at in rows:
        if not isinstance(data, dict):
            continue
        key = str(data.get("delivery"))
        if data.get("status") == "sending":
            claims.setdefault(key, []).append(at)
        else:
            done.add(key)
    busy = {
        key
        for key, times in claims.items()
        if max(times) > now - CLAIM_STALE or len(times) >= MAX_CLAIMS
    }
    return done | busy


def pending(session: Session, now: datetime, lookback: timedelta = LOOKBACK) -> list[Notice]:
    """Job endings and champion moves of the last `lookback` not delivered yet, oldest first."""
    since = now - lookback
    found: list[Notice] = []
    for project in session.scalars(select(Project).order_by(Project.id)):
        url = training_policy_of(project).webhook_url
        if not url:
            continue
        ended = session.scalars(
            select(Job).where(
                Job.project_id == project.id,
                Job.state.in_(jobs.FINISHED),
                Job.parent_id.is_(None),  # a search's trials are reported by the search
                Job.finished_at >= since,
            )
        )
        found += [_job_notice(session, project, url, job) for job in ended]
        moves = session.scalars(
            select(AliasChange).where(
                AliasChange.project_id == project.id,
                AliasChange.alias == CHAMPION,
                AliasChange.previous_version_id.is_not(None),  # not the first (base) champion
                AliasChange.at >= since,
            )
        )
        found += [_move_notice(session, project, url, change) for change in moves]
    settled = _settled(session, {n.job_id for n in found if n.job_id is not None}, now)
    return sorted((n for n in found if n.key not in settled), key=lambda n: n.at)


def claim(store: Store, notice: Notice, now: datetime | None = None) -> bool:
    """Record that this process sends `notice`; False if another one has it or it is done."""
    if notice.job_id is None:
        return True
    with store.write() as session:
        session.execute(select(Job.id).where(Job.id == notice.job_id).with_for_update())
        if notice.key in _settled(session, {notice.job_id}, now or datetime.now(UTC)):
            return False
        event = notice.payload["event"]
        data = {"delivery": notice.key, "event": event, "status": "sending", "url": notice.url}
        jobs.add_event(session, notice.job_id, "webhook", f"webhook: sending {event}", data)
    return True


def post(
    url: str,
    payload: dict[str, Any],
    *,
    timeout: float = TIMEOUT,
    attempts: int = ATTEMPTS,
    stop: threading.Event | None = None,
    secret: str | None = None,
) -> dict[str, Any]:
    """POST with retries; the outcome as data (never raises). With `secret`, each attempt
    is signed (Standard Webhooks headers, a fresh timestamp per attempt)."""
    delivery = str(payload.get("delivery"))
    headers = {
        "User-Agent": f"fineloop/{__version__}",
        "Content-Type": "application/json",
        "X-Fineloop-Event": str(payload.get("event")),
        "X-Fineloop-Delivery": delivery,
    }
    body = json.dumps(payload).encode()  # the exact bytes signed are the bytes sent
    outcome: dict[str, Any] = {"status": "failed"}
    for attempt in range(1, attempts + 1):
        outcome["attempts"] = attempt
        if secret is not None:
            headers |= signed_headers(secret, delivery, body, int(time.time()))
        try:
            response = httpx.post(url, content=body, headers=headers, timeout=timeout)
        except httpx.HTTPError as error:
            outcome |= {"error": f"{type(error).__name__}: {error}"[:300]}
        else:
            outcome["code"] = response.status_code
            if response.is_success:
                return {"status": "delivered", "code": response.status_code, "attempts": attempt}
            outcome["error"] = f"HTTP {response.status_code}"
            if response.status_code not in RETRY_STATUS:
                break
        if attempt < attempts and (stop or threading.Event()).wait(0.5 * 2 ** (attempt - 1)):
            break  # stopping: no more attempts
    return outcome


def deliver(
    store: Store, notice: Notice, now: datetime | None = None, **options: Any
) -> dict[str, Any] | None:
    """Claim, send and record one notice; None when another process has it."""
    if not claim(store, notice, now):
        return None
    if notice.project_id is not None and "secret" not in options:
        with store.write() as session:
            options["secret"] = secret_of(session, notice.project_id).secret
    outcome = post(notice.url, notice.payload, **options)
    event = notice.payload["event"]
    if notice.job_id is not None:
        data = outcome | {"delivery": notice.key, "event": event, "url": notice.url}
        text = f"webhook: {event} {outcome['status']}"
        if outcome["status"] != "delivered":
            text += f" after {outcome['attempts']} attempt(s): {outcome.get('error')}"
        with store.write() as session:
            jobs.add_event(session, notice.job_id, "webhook", text, data)
    if outcome["status"] != "delivered":
        log.warning("webhook %s to %s failed: %s", notice.key, notice.url, outcome.get("error"))
    return outcome


def deliver_pending(
    store: Store,
    now: datetime | None = None,
    *,
    lookback: timedelta = LOOKBACK,
    **options: Any,
) -> list[dict[str, Any]]:
    """Send everything pending; the outcomes of the deliveries this call made."""
    now = now or datetime.now(UTC)
    with store.read() as session:
        notices = pending(session, now, lookback)
    made = []
    for notice in notices:
        outcome = deliver(store, notice, now, **options)
        if outcome is not None:
            made.append(outcome | {"delivery": notice.key})
    return made
