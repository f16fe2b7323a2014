"""A job's events, metric points and progress as Server-Sent Events, polled from the store.

Events and metric points live in two tables with two id sequences, so the position in the
stream is a pair: every message's SSE `id` is the cursor `E-M` (the last event id and the
last metric point id sent so far), which a reconnecting client hands back as `Last-Event-ID`
and gets only what came later: no metric point twice, none missed. A bare event id `E` is
accepted as well (metric points then resume after those written by the time of event E).

The generator is async and sleeps with asyncio; each poll's reads run in the threadpool in a
session of their own, so an open stream holds neither a connection nor a thread between
polls and never blocks the server's other requests.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from fineloop.errors import Invalid
from fineloop.jobs import store as jobs
from fineloop.store import Store
from fineloop.store.schema import Job, JobEvent, JobMetric

BATCH = 500
SETTLE = 3.0  # seconds within which a row may commit after a later one
RETRY_MS = 2000


@dataclass(frozen=True)
class Cursor:
    """How far a client got: the last event id and the last metric point id it received."""

    event: int = 0
    metric: int = 0

    def __str__(self) -> str:
        return f"{self.event}-{self.metric}"


def parse_cursor(text: str) -> tuple[int, int | None]:
    """`E-M` -> (E, M); a bare `E` -> (E, None). Invalid (422) for anything else."""
    found = re.fullmatch(r"(\d{1,18})(?:-(\d{1,18}))?", text.strip(), re.ASCII)
    if found is not None:
        return int(found[1]), int(found[2]) if found[2] is not None else None
    raise Invalid(
        f"Last-Event-ID {text[:40]!r} is not a stream position; send back the `id` of the last "
        "message received (like 12-40), or a job event id",
        field="Last-Event-ID",
    )


def resolve_cursor(store: Store, job_id: int, event: int, metric: int | None) -> Cursor:
    """The full cursor; for a bare event id, the metric points written up to that event."""
    if metric is None:
        metric = 0
        if event:
            with store.read() as session:
                at = session.scalar(select(JobEvent.at).where(JobEvent.id == event))
                if at is not None:
                    query = select(func.max(JobMetric.id)).where(
                        JobMetric.job_id == job_id, JobMetric.at <= at
                    )
                    metric = session.scalar(query) or 0
    return Cursor(event, metric)


@dataclass
class Batch:
    """What one poll read: the job row's state, then everything written after the cursor."""

    state: str
    progress: float
    message: str
    events: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def drained(self) -> bool:
        return len(self.events) < BATCH and len(self.metrics) < BATCH


def read_batch(store: Store, job_id: int, cursor: Cursor, late: Late | None = None) -> Batch:
    """The job first, then its rows: a job read as final has all its rows committed.

    With `late`, rows below the cursor that were not sent are read too (see `Late`)."""
    with store.read() as session:
        row = session.execute(
            select(Job.state, Job.progress, Job.message).where(Job.id == job_id)
        ).one()
        found = Batch(row.state, row.progress, row.message)
        events = _rows(session, JobEvent, job_id, cursor.event, late)
        found.events = [jobs.event_public(event) for event in events]
        found.metrics = [_metric(m) for m in _rows(session, JobMetric, job_id, cursor.metric, late)]
    return found


def _rows(session: Session, table: Any, job_id: int, after: int, late: Late | None) -> list[Any]:
    query = select(table).where(table.job_id == job_id, table.id > after)
    fresh = list(session.scalars(query.order_by(table.id).limit(BATCH)))
    return fresh if late is None else late.missing(session, table, job_id, after) + fresh


def _metric(m: Any) -> dict[str, Any]:
    return {"id": m.id, "name": m.name, "step": m.step, "value": m.value, "at": m.at.isoformat()}


class Late:
    """Rows that commit after rows with higher ids (PostgreSQL hands out ids at insert,
    not at commit, and a job has several writers): each poll also reads the ids between a
    floor, the cursor of `SETTLE` seconds ago, and the cursor, and sends those not sent."""

    def __init__(self, start: Cursor) -> None:
        self.history: deque[tuple[float, Cursor]] = deque([(-float("inf"), start)])
        self.sent: dict[type, set[int]] = {JobEvent: set(), JobMetric: set()}

    def note(self, clock: float, cursor: Cursor, name: str, row_id: int) -> None:
        self.sent[JobMetric if name == "metric" else JobEvent].add(row_id)
        if self.history[-1][1] != cursor:
            self.history.append((clock, cursor))

    def advance(self, clock: float) -> None:
        while len(self.history) > 1 and self.history[1][0] <= clock - SETTLE:
            self.history.popleft()
        floor = self.history[0][1]
        self.sent[JobEvent] = {i for i in self.sent[JobEvent] if i > floor.event}
        self.sent[JobMetric] = {i for i in self.sent[JobMetric] if i > floor.metric}

    def missing(self, session: Session, table: Any, job_id: int, upto: int) -> list[Any]:
        floor = self.history[0][1]
        low = floor.metric if table is JobMetric else floor.event
        if low >= upto:
            return []
        ids = session.scalars(
            select(table.id).where(table.job_id == job_id, table.id > low, table.id <= upto)
        )
        wanted = sorted(set(ids) - self.sent[table])
        if not wanted:
            return []
        return list(session.scalars(select(table).where(table.id.in_(wanted)).order_by(table.id)))


def message(name: str, cursor: Cursor, data: dict[str, Any]) -> str:
    """One SSE message (JSON data has no raw newlines, so one `data:` line suffices)."""
    return f"id: {cursor}\nevent: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def nothing_new(store: Store, job_id: int, cursor: Cursor) -> bool:
    """A reconnect after the job ended with nothing left to send (answered 204, which
    tells an EventSource to stop reconnecting)."""
    batch = read_batch(store, job_id, cursor)
    return batch.state in jobs.FINISHED and not batch.events and not batch.metrics


async def stream(
    store: Store,
    job_id: int,
    cursor: Cursor,
    *,
    poll: float = 0.5,
    keepalive: float = 15.0,
    stopping: Callable[[], bool] = lambda: False,
) -> AsyncIterator[str]:
    """Messages until the job is final and everything up to its end was sent.

    Rows go out in write order (events and metric points merged by time); a `progress`
    message follows whenever the job's progress, message or state changed."""
    yield f"retry: {RETRY_MS}\n\n"
    shown: tuple[str, float, str] | None = None
    clock = asyncio.get_running_loop().time
    quiet_since = clock()
    late = Late(cursor)
    while True:
        late.advance(clock())
        batch = await run_in_threadpool(read_batch, store, job_id, cursor, late)
        out: list[str] = []
        for name, data in merged(batch):
            if name == "metric":
                cursor = Cursor(cursor.event, max(cursor.metric, data["id"]))
            else:
                cursor = Cursor(max(cursor.event, data["id"]), cursor.metric)
            late.note(clock(), cursor, name, data["id"])
            out.append(message(name, cursor, data))
        now = (batch.state, batch.progress, batch.message)
        if now != shown:
            shown = now
            progress = {"state": now[0], "progress": now[1], "message": now[2]}
            progress["at"] = datetime.now(UTC).isoformat()
            out.append(message("progress", cursor, progress))
        if out:
            yield "".join(out)
            quiet_since = clock()
        elif clock() - quiet_since >= keepalive:
            yield ": keep-alive\n\n"
            quiet_since = clock()
        if batch.drained and (batch.state in jobs.FINISHED or stopping()):
            return
        if batch.drained:
            await asyncio.sleep(poll)


def merged(batch: Batch) -> Iterator[tuple[str, dict[str, Any]]]:
    """Events and metric points, each in id order, interleaved by the time they were
    written: (SSE event name, data). Keeping each table in id order keeps the cursor exact."""
    events, metrics = batch.events, batch.metrics
    i = j = 0
    while i < len(events) or j < len(metrics):
        take_event = j >= len(metrics) or (
            i < len(events) and _time(events[i]) <= _time(metrics[j])
        )
        if take_event:
            yield events[i]["kind"], events[i]
            i += 1
        else:
            yield "metric", metrics[j]
            j += 1


def _time(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(row["at"])


def event_stream(
    store: Store,
    request: Request,
    job_id: int,
    after: int,
    after_metric: int | None,
    keepalive: float,
    last_event_id: str | None,
) -> Response:
    """The streaming response (or 204 for a reconnect with nothing left to send)."""
    if last_event_id is not None:
        event, metric = parse_cursor(last_event_id)
    else:
        event, metric = after, after_metric
    cursor = resolve_cursor(store, job_id, event, metric)
    if last_event_id is not None and nothing_new(store, job_id, cursor):
        return Response(status_code=204)
    stopping = getattr(request.app.state, "stopping", None)
    body = stream(store, job_id, cursor, keepalive=keepalive, stopping=stopping or (lambda: False))
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)
