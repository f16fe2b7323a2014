"""`ChangeLog`: which items were upserted, in order, so every cached index can catch up.

The items routes record the ids they stored; each catalog remembers the sequence number it
has applied and asks for what came after. Only the latest `KEEP` batches per project are
kept: a catalog that fell further behind resyncs from the store instead.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

KEEP = 1_000


class ChangeLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._batches: dict[str, deque[tuple[int, frozenset[str]]]] = {}
        self._dropped: dict[str, int] = {}

    def seq(self) -> int:
        with self._lock:
            return self._seq

    def record(self, project: str, item_ids: Iterable[str]) -> int:
        with self._lock:
            self._seq += 1
            batches = self._batches.setdefault(project, deque())
            batches.append((self._seq, frozenset(item_ids)))
            while len(batches) > KEEP:
                self._dropped[project] = batches.popleft()[0]
            return self._seq

    def record_all(self, project: str) -> int:
        """Something changed, ids unknown (a file import): every reader resyncs."""
        with self._lock:
            self._seq += 1
            self._dropped[project] = self._seq
            self._batches.pop(project, None)
            return self._seq

    def since(self, project: str, applied: int) -> tuple[set[str] | None, int]:
        """Ids changed after `applied` and the sequence number they bring the reader to;
        None instead of ids when some were forgotten (the reader must resync)."""
        with self._lock:
            if self._dropped.get(project, 0) > applied:
                return None, self._seq
            changed: set[str] = set()
            for seq, ids in reversed(self._batches.get(project, ())):
                if seq <= applied:
                    break
                changed |= ids
            return changed, self._seq
