"""Progress sinks for running jobs: into the store, onto a slice of the bar, or to several.

A trainer reports every logging step; writing each report in its own transaction would
make the job fight the API for SQLite's write lock. `StoreSink` keeps reports in memory and
writes them together at most every `interval` seconds (and when closed), which also
refreshes the job's heartbeat.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import update

from fineloop.jobs.store import RUNNING, add_event, add_metrics, cancel_requested, now
from fineloop.store import Store
from fineloop.store.schema import Job, table
from fineloop.tasks.base import ProgressSink


class StoreSink:
    """Writes a job's progress, log lines and metric points to the store, throttled."""

    def __init__(
        self,
        store: Store,
        job_id: int,
        *,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._progress: tuple[float, str] | None = None
        self._events: list[tuple[str, str, dict[str, Any]]] = []
        self._points: list[tuple[str, int, float]] = []
        self._flushed_at = -float("inf")
        self._checked_at = -float("inf")
        self._cancelled = False

    def progress(self, fraction: float, message: str = "") -> None:
        with self._lock:
            self._progress = (min(1.0, max(0.0, float(fraction))), message)
        self._maybe_flush()

    def metric(self, name: str, step: int, value: float) -> None:
        with self._lock:
            self._points.append((name, int(step), float(value)))
        self._maybe_flush()

    def log(self, message: str) -> None:
        with self._lock:
            self._events.append(("log", message, {}))
        self._maybe_flush()

    def cancelled(self) -> bool:
        """Whether a cancel was requested; the store is asked at most every `interval`."""
        if not self._cancelled and self._clock() - self._checked_at >= self.interval:
            with self.store.read() as session:
                self._cancelled = cancel_requested(session, self.job_id)
            self._checked_at = self._clock()
        return self._cancelled

    def _maybe_flush(self) -> None:
        if self._clock() - self._flushed_at >= self.interval:
            self.flush()

    def flush(self) -> None:
        """Write everything pending in one transaction (and beat the heartbeat)."""
        with self._lock:
            progress, self._progress = self._progress, None
            pending, self._events = self._events, []
            points, self._points = self._points, []
            self._flushed_at = self._clock()
        values: dict[str, Any] = {"heartbeat_at": now()}
        if progress is not None:
            values["progress"] = progress[0]
            if progress[1]:
                values["message"] = progress[1]
        jobs = table(Job)
        with self.store.write() as session:
            running = (jobs.c.id == self.job_id) & (jobs.c.state == RUNNING)
            session.execute(update(jobs).where(running).values(**values))
            for kind, message, data in pending:
                add_event(session, self.job_id, kind, message, data)
            add_metrics(session, self.job_id, points)

    def close(self) -> None:
        self.flush()


class Stage:
    """One step of a pipeline as a slice [start, end] of the job's progress bar."""

    def __init__(self, sink: ProgressSink, start: float, end: float, label: str) -> None:
        self.sink, self.start, self.end, self.label = sink, start, end, label

    def progress(self, fraction: float, message: str = "") -> None:
        span = self.end - self.start
        clamped = min(1.0, max(0.0, fraction))
        self.sink.progress(self.start + span * clamped, message or self.label)

    def metric(self, name: str, step: int, value: float) -> None:
        self.sink.metric(name, step, value)

    def log(self, message: str) -> None:
        self.sink.log(message)

    def cancelled(self) -> bool:
        return self.sink.cancelled()


class Tee:
    """Every report to several sinks (the store and a progress bar); cancelled if any says so."""

    def __init__(self, *sinks: ProgressSink) -> None:
        self.sinks = sinks

    def progress(self, fraction: float, message: str = "") -> None:
        for sink in self.sinks:
            sink.progress(fraction, message)

    def metric(self, name: str, step: int, value: float) -> None:
        for sink in self.sinks:
            sink.metric(name, step, value)

    def log(self, message: str) -> None:
        for sink in self.sinks:
            sink.log(message)

    def cancelled(self) -> bool:
        return any(sink.cancelled() for sink in self.sinks)

    def flush(self) -> None:
        for sink in self.sinks:
            flush = getattr(sink, "flush", None)
            if callable(flush):
                flush()
