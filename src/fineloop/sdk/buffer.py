"""`BufferedLogger`: log feedback from a request path without waiting for the server.

Events wait in memory and a background thread sends them in batches. Each event gets an
idempotency key when queued, so resending a batch after a timeout never stores it twice.
An invalid event is set aside (in `.rejected`, and reported) instead of holding back the
valid events of its batch.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fineloop.sdk import events as build
from fineloop.sdk.client import Client
from fineloop.sdk.transport import FineloopError, encode

log = logging.getLogger("fineloop.sdk")
ErrorHandler = Callable[[FineloopError, list[dict[str, Any]]], None]


@dataclass(frozen=True)
class Rejected:
    """An event the server refused (or that could not be sent), and why."""

    event: dict[str, Any]
    status: int
    reason: str


@dataclass(slots=True)
class _Queued:
    event: dict[str, Any]
    at: float


class BufferedLogger:
    """Queue feedback for `project` and send it in the background.

    A batch leaves when `max_batch` events are queued or the oldest has waited
    `flush_interval` seconds. `on_error(error, events)` hears about events that will not be
    stored; by default they are logged. Unsent events are flushed at interpreter exit."""

    EXIT_TIMEOUT = 30.0
    BACKOFF = 0.5
    MAX_BACKOFF = 30.0

    def __init__(
        self,
        client: Client,
        project: str,
        max_batch: int = 1000,
        flush_interval: float = 1.0,
        max_queue: int = 100_000,
        on_error: ErrorHandler | None = None,
    ) -> None:
        self.client = client
        self.project = project
        self.max_batch = max_batch
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.on_error = on_error or _log_error
        self.rejected: list[Rejected] = []
        self.dropped = 0
        self._cond = threading.Condition()
        self._queue: deque[_Queued] = deque()
        self._enqueued = 0  # events accepted so far
        self._taken = 0  # of those, taken into a batch
        self._settled = 0  # of those, stored, rejected or given up
        self._flush_upto = 0  # send at once until _taken reaches this
        self._closing = False
        self._give_up = False
        self._thread = threading.Thread(
            target=self._run, name=f"fineloop-logger-{project}", daemon=True
        )
        self._thread.start()
        atexit.register(self._at_exit)

    def __enter__(self) -> BufferedLogger:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Events queued or in flight, not yet stored or rejected."""
        with self._cond:
            return self._enqueued - self._settled

    def feedback(self, event: Mapping[str, Any]) -> str:
        """Queue one event and return its idempotency key. A full queue drops the event
        (counted in `.dropped`, reported to `on_error`) rather than block the caller."""
        row = dict(event)
        if not row.get("idempotency_key"):
            row["idempotency_key"] = uuid.uuid4().hex
        encode(row)  # fail here, in the caller, if it cannot travel as JSON
        with self._cond:
            if self._closing:
                raise RuntimeError("this BufferedLogger is closed")
            full = len(self._queue) >= self.max_queue
            if full:
                self.dropped += 1
            else:
                self._queue.append(_Queued(row, time.monotonic()))
                self._enqueued += 1
                if len(self._queue) == 1 or len(self._queue) >= self.max_batch:
                    self._cond.notify_all()
        if full:
            message = f"queue full ({self.max_queue} events); event dropped"
            self._report(FineloopError(0, "queue_full", message, {}), [row])
        return str(row["idempotency_key"])

    def thumb(self, interaction_id: str, up: bool, **extra: Any) -> str:
        return self.feedback(build.thumb(interaction_id, up, **extra))

    def rating(self, interaction_id: str, value: float, **extra: Any) -> str:
        return self.feedback(build.rating(interaction_id, value, **extra))

    def selection(
        self,
        interaction_id: str,
        selected: Iterable[str],
        rejected: Iterable[str] = (),
        **extra: Any,
    ) -> str:
        return self.feedback(build.selection(interaction_id, selected, rejected, **extra))

    def correct(self, interaction_id: str, output: Any, **extra: Any) -> str:
        return self.feedback(build.correction(interaction_id, output, **extra))

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued so far and wait until the server has answered for each
        event; False if `timeout` seconds passed first."""
        if threading.current_thread() is self._thread:
            return False  # called from on_error: waiting on ourselves would never end
        with self._cond:
            target = self._enqueued
            self._flush_upto = max(self._flush_upto, target)
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._settled >= target, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush and stop. After `timeout` seconds, events still unsent are given up and
        reported; returns whether everything was delivered or rejected in time."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if threading.current_thread() is self._thread:
            return False  # called from on_error: the sender stops once the queue is drained
        self._thread.join(timeout)
        finished = not self._thread.is_alive()
        if not finished:
            with self._cond:
                self._give_up = True
                self._cond.notify_all()
            self._thread.join(self.client.timeout)
        atexit.unregister(self._at_exit)
        return finished

    def _at_exit(self) -> None:
        self.close(self.EXIT_TIMEOUT)

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._deliver(batch)
            except Exception as error:  # the sender must outlive any surprise
                log.exception("fineloop: sending feedback failed")
                self._reject(batch, FineloopError(0, "internal", repr(error), {}))
            with self._cond:
                self._settled += len(batch)
                self._cond.notify_all()

    def _next_batch(self) -> list[dict[str, Any]] | None:
        """Wait until a batch is due and take it; None once closed and drained."""
        with self._cond:
            while True:
                if self._queue:
                    wait = self._queue[0].at + self.flush_interval - time.monotonic()
                    due = len(self._queue) >= self.max_batch or self._flush_upto > self._taken
                    if due or self._closing or wait <= 0:
                        count = min(self.max_batch, len(self._queue))
                        self._taken += count
                        return [self._queue.popleft().event for _ in range(count)]
                    self._cond.wait(wait)
                elif self._closing:
                    return None
                else:
                    self._cond.wait()

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        """Send until every event is stored or rejected: invalid rows are set aside, an
        oversize batch is halved, and outages are waited out with growing pauses."""
        todo = [batch]
        failures = 0
        while todo:
            rows = todo.pop()
            if self._give_up:
                message = "not sent: the logger closed while the server was unreachable"
                self._reject(rows, FineloopError(0, "gave_up", message, {}))
                continue
            try:
                self.client.send_feedback_batch(self.project, rows)
                failures = 0
            except FineloopError as error:
                bad = _invalid_indexes(error, len(rows))
                if bad:
                    indexes = sorted(bad)
                    self._reject([rows[i] for i in indexes], error, _reasons(error, indexes))
                    rest = [row for i, row in enumerate(rows) if i not in bad]
                    todo += [rest] if rest else []
                elif error.status == 413 and len(rows) > 1:
                    half = len(rows) // 2
                    todo += [rows[half:], rows[:half]]
                elif error.status == 0 or error.status == 429 or error.status >= 500:
                    log.warning("fineloop: feedback batch will be retried: %s", error)
                    self._pause(failures)
                    failures += 1
                    todo.append(rows)
                else:
                    self._reject(rows, error)

    def _pause(self, failures: int) -> None:
        delay = min(self.MAX_BACKOFF, self.BACKOFF * 2**failures)
        with self._cond:
            self._cond.wait_for(lambda: self._give_up, delay)

    def _reject(
        self, rows: list[dict[str, Any]], error: FineloopError, reasons: list[str] | None = None
    ) -> None:
        why = reasons or [error.message] * len(rows)
        with self._cond:
            self.rejected += [
                Rejected(row, error.status, reason) for row, reason in zip(rows, why, strict=True)
            ]
        self._report(error, rows)

    def _report(self, error: FineloopError, rows: list[dict[str, Any]]) -> None:
        try:
            self.on_error(error, rows)
        except Exception:
            log.exception("fineloop: on_error callback failed")


def _invalid_indexes(error: FineloopError, size: int) -> set[int]:
    if error.status != 422:
        return set()
    rows = (r.get("row") for r in error.invalid_rows)
    return {r for r in rows if isinstance(r, int) and 0 <= r < size}


def _reasons(error: FineloopError, indexes: Iterable[int]) -> list[str]:
    """The server's complaints about each of the rows at `indexes`."""
    found: dict[int, list[str]] = {}
    for problem in error.invalid_rows:
        where = f"{problem.get('field')}: {problem.get('message')}"
        found.setdefault(problem.get("row", -1), []).append(where)
    return ["; ".join(found.get(i, [error.message])) for i in indexes]


def _log_error(error: FineloopError, rows: list[dict[str, Any]]) -> None:
    log.warning("fineloop: %d feedback event(s) not stored: %s", len(rows), error)
