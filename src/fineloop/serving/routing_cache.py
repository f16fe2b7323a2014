"""`RoutingCache`: what serving resolves on every request — the project (task, serving
policy), the champion or a named version, the active rollout — kept in this process
between changes instead of read from the store each time (~2-7 ms a request before).

Entries stay valid while the store's serving epoch (store/epoch.py) does not move. This
process reads the epoch (one primary-key read of one row) at most once per
`routing_refresh_seconds`, in whichever request finds the last check too old, and at once
after a commit of its own moved it. So:
- a change made through this process (a promotion, a rollback, a rollout PUT, a project
  PATCH) is served by the next request: read-your-writes;
- a change committed by another process (another server on the same database, the CLI, a
  training job, another `Store`) is served by every request that starts
  `routing_refresh_seconds` or more after its commit (default 0.5 s).

Failures (an unknown project or version) are never cached, so a project created a moment
ago is found at once. Any move of the epoch empties the cache; it holds at most
`MAX_ENTRIES` in between (least recently used first out).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar, cast

from fineloop.store import Store

T = TypeVar("T")
MAX_ENTRIES = 4096


class RoutingCache:
    def __init__(self, store: Store, refresh_seconds: float) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._epoch: int | None = None  # the stored epoch the entries belong to
        self._local = -1  # store.epoch.local at the last check
        self._checked = -float("inf")  # when the last applied check started
        # Grows whenever the entries are dropped: a load that began before a drop may
        # hold what the drop was for, so its result is not kept.
        self._generation = 0

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        """The cached value of `key`, else `load()` (kept unless it raised)."""
        generation = self._current()
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return cast(T, self._entries[key])
        value = load()
        with self._lock:
            if self._generation == generation:
                self._entries[key] = value
                while len(self._entries) > MAX_ENTRIES:
                    self._entries.popitem(last=False)
        return value

    def forget(self) -> None:
        """Drop every entry now (the next requests read the store)."""
        with self._lock:
            self._entries.clear()
            self._generation += 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _current(self) -> int:
        """The generation of entries valid now; reads the stored epoch when due."""
        epoch = self.store.epoch
        started = time.monotonic()
        local = epoch.local  # read before the stored epoch: a later commit checks again
        with self._lock:
            fresh = started - self._checked < self.refresh_seconds
            if local == self._local and fresh:
                return self._generation
        with self.store.read() as session:
            stored = epoch.read(session)
        with self._lock:
            if started < self._checked:  # a check that started later already answered
                return self._generation
            if stored != self._epoch:
                self._entries.clear()
                self._generation += 1
                self._epoch = stored
            self._checked, self._local = started, local
            return self._generation
