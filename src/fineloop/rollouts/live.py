"""`LiveRollouts`: what one serving process knows of rollouts, and when it runs the policy.

The active rollout of a project is read from the store at most every `TTL` seconds (a
change made through this process's API is seen at once; one made elsewhere within `TTL`).
The policy is evaluated on the serving background worker:
- after feedback arrives, at most once per the policy's debounce_seconds (feedback inside
  that window marks the project pending; the next feedback or request after it runs it);
- while requests flow, at least every `PERIODIC_SECONDS`, which catches feedback stored by
  other processes (a CLI import, another server).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select

from fineloop.rollouts import policy
from fineloop.rollouts.spec import RolloutPolicy, Variant
from fineloop.rollouts.store import ACTIVE
from fineloop.store import Store
from fineloop.store.schema import Project, Rollout
from fineloop.validation import read_stored

log = logging.getLogger("fineloop.rollouts")
TTL = 2.0
PERIODIC_SECONDS = 300.0


@dataclass(frozen=True)
class ActiveRollout:
    id: int
    variants: tuple[Variant, ...]
    policy: RolloutPolicy


class Submitter(Protocol):
    """What runs chores in the background (the serving worker)."""

    def submit(self, chore: Callable[[], None]) -> None: ...


class LiveRollouts:
    def __init__(
        self, store: Store, background: Submitter, champion_moved: Callable[[str], None]
    ) -> None:
        self.store = store
        self.background = background
        self.champion_moved = champion_moved
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, ActiveRollout | None]] = {}
        self._evaluated: dict[str, float] = {}
        self._pending: set[str] = set()

    def active(self, project: str) -> ActiveRollout | None:
        with self._lock:
            cached = self._cache.get(project)
        if cached is not None and time.monotonic() - cached[0] < TTL:
            return cached[1]
        found = self._read(project)
        with self._lock:
            self._cache[project] = (time.monotonic(), found)
        return found

    def forget(self, project: str | None = None) -> None:
        with self._lock:
            if project is None:
                self._cache.clear()
            else:
                self._cache.pop(project, None)

    def feedback_arrived(self, project: str) -> None:
        with self._lock:
            self._pending.add(project)
        self.tick(project)

    def tick(self, project: str) -> None:
        """Run the policy in the background if it is due (see the module docstring)."""
        active = self.active(project)
        if active is None:
            return
        now = time.monotonic()
        with self._lock:
            last = self._evaluated.get(project)
            since = None if last is None else now - last
            pending = project in self._pending
            due = since is None or since >= PERIODIC_SECONDS
            if pending and (since is None or since >= active.policy.debounce_seconds):
                due = True
            if not due:
                return
            self._evaluated[project] = now
            self._pending.discard(project)
        self.background.submit(lambda: self._evaluate_quietly(project))

    def evaluate(self, project: str) -> list[dict[str, Any]]:
        """Run the policy now; forget the cached rollout and warn serving if it acted."""
        taken = policy.evaluate(self.store, project)
        if taken:
            log.info("rollout of %s: %s", project, "; ".join(str(a["reason"]) for a in taken))
            self.forget(project)
            if any(a["action"] == "promote" for a in taken):
                self.champion_moved(project)
        return taken

    def _evaluate_quietly(self, project: str) -> None:
        self.evaluate(project)

    def _read(self, project: str) -> ActiveRollout | None:
        with self.store.read() as session:
            row = session.scalar(
                select(Rollout)
                .join(Project, Project.id == Rollout.project_id)
                .where(Project.name == project, Rollout.state == ACTIVE)
                .order_by(Rollout.id.desc())
                .limit(1)
            )
            if row is None:
                return None
            variants = tuple(Variant.from_dict(v) for v in row.variants)
            return ActiveRollout(
                row.id, variants, read_stored(RolloutPolicy, row.policy, "rollout policy")
            )
