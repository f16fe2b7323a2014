"""`Catalog`: one project's items embedded by one model version, kept in step with the store.

Built once from every item of the project (vectors of unchanged texts come from the
version's on-disk cache, see persist.py), then updated in place: the items routes report
the ids they upserted (`refresh(ids)` re-embeds only rows whose text changed), and a periodic
`resync` compares each row's `updated_at` with the store, which catches writes made by
other processes (a CLI import while the server runs).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from sqlalchemy import func, select

from fineloop.serving.versions import VersionRef
from fineloop.store import Store
from fineloop.store.schema import Item
from fineloop.tasks.embedding.serving.index import VectorIndex
from fineloop.tasks.embedding.serving.persist import VectorCache, text_key
from fineloop.tasks.embedding.serving.queries import recent_queries

_PAGE = 2_000
_ENCODE_CHUNK = 256  # the predictor's lock is released between chunks: queries get in
_IN_CHUNK = 500


class Encoder(Protocol):
    dimension: int

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray: ...


@dataclass(frozen=True)
class _Row:
    row: int
    item_id: str
    text: str
    metadata: dict[str, Any]
    updated_at: datetime


class Catalog:
    """Item vectors of one (project, version), with the texts shown in results."""

    def __init__(
        self,
        project_id: int,
        version: VersionRef,
        encoder: Encoder,
        cache: VectorCache | None = None,
        ann_min_items: int | None = None,
    ) -> None:
        self.project_id = project_id
        self.version = version
        self.encoder = encoder
        self.cache = cache
        self.index = VectorIndex(encoder.dimension, ann_min_items)
        self.texts: dict[int, str] = {}
        self.updated: dict[int, datetime] = {}
        self.keys: dict[int, int] = {}  # row -> text hash, for the on-disk cache
        self.dirty = False  # vectors changed since the cache was last written
        self.catching_up = False  # a background refresh is queued or running
        self.applied_seq = 0
        self.total: int | None = None  # items load_all will store (progress of a build)
        self.synced_at = time.monotonic()
        self.lock = threading.Lock()  # one refresh at a time; searches don't take it

    def __len__(self) -> int:
        return len(self.index)

    @property
    def loaded(self) -> int:
        """Items in the index so far (grows while load_all runs)."""
        return len(self.index)

    def load_all(self, store: Store) -> None:
        with store.read() as session:
            self.total = session.scalar(
                select(func.count()).select_from(Item).where(Item.project_id == self.project_id)
            )
        after = 0
        while True:
            with store.read() as session:
                rows = [
                    _Row(*found)
                    for found in session.execute(
                        select(
                            Item.id, Item.item_id, Item.text, Item.item_metadata, Item.updated_at
                        )
                        .where(Item.project_id == self.project_id, Item.id > after)
                        .order_by(Item.id)
                        .limit(_PAGE)
                    )
                ]
            if not rows:
                break
            self._apply(rows)
            after = rows[-1].row
        self.index.settle(recent_queries(store, self.project_id, self.encoder))
        self.synced_at = time.monotonic()

    def refresh(self, store: Store, item_ids: Iterable[str]) -> int:
        """Re-read these items; embed those that are new or whose text changed."""
        wanted = list(dict.fromkeys(item_ids))
        rows: list[_Row] = []
        with store.read() as session:
            for start in range(0, len(wanted), _IN_CHUNK):
                rows += [
                    _Row(*found)
                    for found in session.execute(
                        select(
                            Item.id, Item.item_id, Item.text, Item.item_metadata, Item.updated_at
                        ).where(
                            Item.project_id == self.project_id,
                            Item.item_id.in_(wanted[start : start + _IN_CHUNK]),
                        )
                    )
                ]
        found = {row.item_id for row in rows}
        gone = [self.index.row_of[i] for i in wanted if i not in found and i in self.index.row_of]
        self._remove(gone)
        return self._apply(rows)

    def resync(self, store: Store) -> int:
        """Compare every row's update time with the store; refresh what differs."""
        with store.read() as session:
            current = {
                row: (item_id, updated)
                for row, item_id, updated in session.execute(
                    select(Item.id, Item.item_id, Item.updated_at).where(
                        Item.project_id == self.project_id
                    )
                )
            }
        stale = [item_id for row, (item_id, at) in current.items() if self.updated.get(row) != at]
        self._remove([row for row in list(self.updated) if row not in current])
        changed = self.refresh(store, stale) if stale else 0
        self.index.settle(recent_queries(store, self.project_id, self.encoder))
        self.synced_at = time.monotonic()
        return changed

    def save(self) -> None:
        """Write every item vector to the version's on-disk cache."""
        if self.cache is None:
            return
        rows = list(self.texts)
        keys = np.array([self.keys[row] for row in rows], dtype=np.int64)
        self.dirty = False
        self.cache.save(keys, self.index.vectors(rows))

    def _apply(self, rows: list[_Row]) -> int:
        """Embed new or re-worded rows (unless the cache has them); other rows only get
        their metadata updated. Returns how many texts were embedded."""
        fresh = [r for r in rows if self.texts.get(r.row) != r.text]
        same = [r for r in rows if self.texts.get(r.row) == r.text]
        for r in fresh:
            self.keys[r.row] = text_key(r.text)
        if fresh and self.cache is not None:
            found = self.cache.lookup([self.keys[r.row] for r in fresh])
            cached = [(r, v) for r, v in zip(fresh, found, strict=True) if v is not None]
            if cached:
                self._store([r for r, _ in cached], np.stack([v for _, v in cached]))
            fresh = [r for r, v in zip(fresh, found, strict=True) if v is None]
        self.dirty = self.dirty or bool(fresh)
        # longest first across all chunks, as sentence-transformers sorts one call's texts:
        # each batch then pads to texts of about its own length
        fresh.sort(key=lambda r: -len(r.text))
        for start in range(0, len(fresh), _ENCODE_CHUNK):
            chunk = fresh[start : start + _ENCODE_CHUNK]
            vectors = self.encoder.encode([r.text for r in chunk], batch_size=64)
            self._store(chunk, vectors)
        if same:
            self._store(same, None)
        return len(fresh)

    def _store(self, rows: list[_Row], vectors: np.ndarray | None) -> None:
        # An item deleted and inserted again has a new row id: drop the old row.
        moved = [self.index.row_of.get(r.item_id, r.row) for r in rows]
        self._remove([old for old, r in zip(moved, rows, strict=True) if old != r.row])
        self.index.upsert(
            [r.row for r in rows], [r.item_id for r in rows], [r.metadata for r in rows], vectors
        )
        for r in rows:
            self.texts[r.row] = r.text
            self.updated[r.row] = r.updated_at

    def _remove(self, rows: list[int]) -> None:
        if not rows:
            return
        self.index.remove(rows)
        for row in rows:
            self.texts.pop(row, None)
            self.updated.pop(row, None)
            self.keys.pop(row, None)
