"""Heartbeats: a thread that tells the store a worker still runs its jobs, and gives back
the jobs of workers that stopped telling.

Progress reports refresh a job's heartbeat too, but a job can be silent for minutes
(building a snapshot, evaluating), so this thread beats for every job its worker holds,
every `job_heartbeat_seconds`, whatever the job is doing. Each beat also looks for running
jobs whose heartbeat is older than `job_stale_seconds` (their worker died, here or on
another machine) and queues them again or fails them, as their attempts allow: a lost job
is noticed within job_stale_seconds + job_heartbeat_seconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

from fineloop.config import Settings
from fineloop.jobs import queue
from fineloop.jobs import store as jobs
from fineloop.jobs.runner import clear_scratch
from fineloop.store import Store

log = logging.getLogger("fineloop.worker")


class Heartbeat:
    """Beats for the jobs held by `worker`; with `recover`, recovers other workers' jobs.

    `on_lost(job_id)` is called (from this thread) for a held job that was taken away: it
    was declared lost while this worker stalled, so its run must stop."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        worker: str,
        *,
        recover: bool = True,
        on_lost: Callable[[int], None] | None = None,
    ) -> None:
        self.store, self.settings, self.worker = store, settings, worker
        self.recover_stale = recover
        self.on_lost = on_lost
        self._held: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, job_id: int, attempt: int) -> None:
        with self._lock:
            self._held[job_id] = attempt

    def release(self, job_id: int) -> None:
        with self._lock:
            self._held.pop(job_id, None)

    def beat(self) -> list[int]:
        """Refresh every held job's heartbeat now; returns (and releases) the lost ones."""
        with self._lock:
            held = dict(self._held)
        if not held:
            return []
        with self.store.write() as session:
            lost = queue.beat(session, self.worker, held)
        for job_id in lost:
            self.release(job_id)
            log.warning("job %s is no longer held by %s", job_id, self.worker)
            if self.on_lost is not None:
                self.on_lost(job_id)
        return lost

    def recover(self) -> list[int]:
        """Give back the jobs whose heartbeat went stale; returns their ids."""
        with self.store.write() as session:
            recovered = queue.recover_stale(session, self.settings.job_stale_seconds)
        for job_id in recovered:
            with self.store.read() as session:
                state = jobs.get_job(session, job_id).state
            log.warning("job %s lost its worker: now %s", job_id, state)
            if state in jobs.FINISHED:
                clear_scratch(self.store, self.settings, job_id)
        return recovered

    def start(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._loop, name="fineloop-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.job_heartbeat_seconds):
            try:
                self.beat()
                if self.recover_stale:
                    self.recover()
            except Exception:  # a store hiccup must not end the heartbeat
                log.exception("heartbeat error")
