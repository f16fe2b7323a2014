"""`Build`: how far the build of one (project, version) is (a model load, an index), for
the status route and for the 503 a request gets while it is not ready.

Why requests do not wait for builds: embedding a catalog takes minutes (5,183 abstracts
took ~4 minutes on 2 cores) and clients give up after seconds (the SDK after 30). So a
build runs in the background, a request waits at most `serving_wait_seconds` for it, and
then answers 503 with `Retry-After` (estimated from the build's rate) and this progress.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar

from fineloop.errors import NotReady
from fineloop.serving.versions import VersionRef

State = Literal["queued", "loading_model", "indexing", "ready", "failed"]
T = TypeVar("T")
MAX_RETRY_AFTER = 30  # seconds: a client checks back at least this often
LOAD_RETRY_AFTER = 3  # while the model loads, before any rate is known


class Counted(Protocol):
    """Work whose size is known as it goes (an index: items stored of items to store)."""

    @property
    def loaded(self) -> int: ...

    @property
    def total(self) -> int | None: ...


@dataclass
class Build:
    """One build of a version's index: state, items embedded so far, timing, error."""

    version: VersionRef
    state: State = "queued"
    started: float = field(default_factory=time.monotonic)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished: float | None = None
    error: str | None = None
    work: Counted | None = None  # set once indexing starts; its counters are live

    def indexed(self) -> tuple[int, int | None]:
        """(items stored in the index so far, items the build will store)."""
        if self.work is None:
            return 0, None
        return self.work.loaded, self.work.total

    def retry_after(self) -> int:
        """Seconds until the build is likely done, from its rate so far (1..30)."""
        done, total = self.indexed()
        elapsed = time.monotonic() - self.started
        if self.state != "indexing" or not done or total is None:
            return LOAD_RETRY_AFTER
        remaining = max(total - done, 0) * elapsed / done
        return int(min(max(remaining, 1), MAX_RETRY_AFTER))

    def public(self) -> dict[str, Any]:
        done, total = self.indexed()
        end = self.finished if self.finished is not None else time.monotonic()
        share = done / total if total else float(self.state == "ready")
        return {
            "version": self.version.label,
            "state": self.state,
            "items_indexed": done,
            "items_total": total,
            "progress": round(share, 4),
            "started_at": self.started_at.isoformat(),
            "seconds": round(end - self.started, 3),
            "error": self.error,
        }


def wait_for(future: Future[T], seconds: float, build: Build, what: str) -> T:
    """The future's result if it comes within `seconds` (its error if it failed); else a
    503 NotReady carrying the build's progress and a Retry-After estimate."""
    try:
        return future.result(timeout=seconds)
    except FutureTimeout:
        progress = build.public()
        done, total = build.indexed()
        where = f": {done} of {total} items embedded" if total is not None else ""
        raise NotReady(
            f"{what} of {build.version.label} is {progress['state'].replace('_', ' ')}"
            f"{where}; retry after {build.retry_after()} s",
            retry_after=build.retry_after(),
            progress=progress,
        ) from None
