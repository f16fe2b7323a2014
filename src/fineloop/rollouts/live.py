"""`LiveRollouts`: what one serving process knows of rollouts, and when it runs the policy.

The active rollout of a project comes from the serving state's routing cache
(serving/routing_cache.py): a change made through this process is seen by the next
request, one committed elsewhere within `routing_refresh_seconds`.
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
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select

from fineloop.rollouts import policy
from fineloop.rollouts.spec import RolloutPolicy, Variant
from fineloop.rollouts.store import ACTIVE
from fineloop.store import Store
from fineloop.store.schema import Project, Rollout
from fineloop.validation import read_stored

if TYPE_CHECKING:
    from fineloop.serving.routing_cache import RoutingCache

log = logging.getLogger("fineloop.rollouts")
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
        self,
        store: Store,
        background: Submitter,
        champion_moved: Callable[[str], None],
        cache: RoutingCache,
    ) -> None:
        self.store = store
        self.background = background
        self.champion_moved = champion_moved
        self.cache = cache
        self._lock = threading.Lock()
        self._evaluated: dict[str, float] = {}
        self._pending: set[str] = set()

    def active(self, project: str) -> ActiveRollout | None:
        return self.cache.get(("rollout", project), lambda: self._read(project))

    def forget(self, project: str | None = None) -> None:
        """Read rollouts (and everything else routed) from the store again. Commits through
        this process's store do this by themselves; kept for changes made behind its back."""
        self.cache.forget()

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
