"""A single background worker for serving chores: index builds, resyncs, saves, calibration
refits (model loads get a worker of their own: models.py).

One daemon thread, started on demand and gone after `IDLE_SECONDS` without work, so an app
that never serves (or a test) leaves no thread behind and needs no shutdown hook. Chores run
one at a time, in order; a failure is logged and does not stop the worker.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("fineloop.serving")
IDLE_SECONDS = 10.0


class Background:
    def __init__(self, name: str = "fineloop-serving") -> None:
        self.name = name
        self._queue: queue.Queue[Callable[[], None]] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, chore: Callable[[], None]) -> None:
        with self._lock:
            self._queue.put(chore)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def join(self) -> None:
        """Wait until every submitted chore has run (for tests and orderly shutdowns)."""
        self._queue.join()

    def _run(self) -> None:
        while True:
            try:
                chore = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            try:
                chore()
            except Exception:
                log.exception("serving background chore failed")
            finally:
                self._queue.task_done()
