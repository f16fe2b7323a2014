"""`VectorIndex`: inner-product search over a project's items with FAISS, with filters;
exact up to `ann_min_items` items, approximate (IVF, recall@10 >= 0.98 measured) above.

Why brute force below the threshold and not a graph index: `bench/index_choice.py` on
100,000 x 384 unit vectors, one query at a time: FAISS flat 5.8 ms p50 with recall@10 = 1.0
and a 0.08 s build; usearch HNSW 0.8 ms but recall@10 = 0.08 with its defaults (0.59 with
a beam of 1,024, at 9 ms) and a 70 s build. Brute force keeps results exact for every
catalog and an item replaceable in place. To fit `search`'s 15 ms budget, two stages: a
half-precision FAISS scan (`IndexScalarQuantizer` fp16, half the memory traffic) proposes
k + `RESCORE` candidates, and their float32 vectors (a flat FAISS index) rescore them
exactly — 2.3 ms instead of 6.1 ms at 100k, identical top-10 on every benchmark query, at
1.5x the memory of flat alone (230 MB for 100k x 384).

A scan of every vector grows with the catalog (about 10x slower at 1M), so from
`ann_min_items` on, `settle` (after a full load, and after each resync) swaps the fp16 scan
for an IVF one whose nprobe is tuned to a measured recall (ann.py); the float32 stage and
the rescoring stay. The swap is built beside the live index while it keeps answering:
upserts and removals made meanwhile are journaled and replayed into the new stage. `info`
reports the kind, nprobe, recall@10 measured, build seconds and memory.

Rows are keyed by the store's item row id (`items.id`), so FAISS ids survive restarts and
updates. Metadata filters are equality on keys, served by postings lists ((key, value) ->
rows) and passed to FAISS as an `IDSelectorBatch`: a filtered search stays exact below the
threshold; above it, a filter matching at most `FILTER_EXACT` rows is scored exactly and a
wider one probes proportionally more lists.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from fineloop.tasks.embedding.serving import ann

Filters = Mapping[str, Any]
Queries = Callable[[], np.ndarray | None]
RESCORE = 32  # fp16 scores are within ~1e-3 of float32: 32 spare candidates cover ties
FILTER_EXACT = 20_000  # a filter matching this few rows is scored exactly (~2 ms at 384 dims)
RECENT = 1_000  # served queries kept to tune nprobe on the project's own queries
MIN_QUERIES = 100  # fewer own (or given) queries than this: tune on item vectors
TUNE_QUERIES = 500
CHUNK = 32_768  # rows copied per lock hold while a new stage is built
GROWTH = 2.0  # the IVF is retrained once the catalog is this many times the trained size


def value_key(value: Any) -> bytes:
    """One canonical form per JSON value, so 2 and 2.0 (and key order) compare equal."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        value = int(value)
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer past 64 bits, stored before the API refused them
        return json.dumps(value, sort_keys=True).encode()


class VectorIndex:
    """Unit vectors with their item ids and metadata; every method is thread-safe.
    `ann_min_items`: from this size on `settle` makes the index approximate (None: never)."""

    def __init__(self, dimension: int, ann_min_items: int | None = None) -> None:
        import faiss

        self.dimension = dimension
        self.ann_min_items = ann_min_items
        self._exact = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
        self._fast = ann.flat_fp16(dimension)
        self._nprobe = 0
        self._lock = threading.RLock()
        self._settling = threading.Lock()
        self._journal: set[int] | None = None  # rows changed while a new stage is built
        self._recent = np.zeros((RECENT, dimension), dtype=np.float32)
        self._served = 0  # queries searched (the last RECENT are in _recent)
        self._built: dict[str, Any] = {}
        self.item_of: dict[int, str] = {}
        self.row_of: dict[str, int] = {}
        self.metadata: dict[int, dict[str, Any]] = {}
        self._postings: dict[tuple[str, bytes], set[int]] = {}

    def __len__(self) -> int:
        return len(self.item_of)

    @property
    def kind(self) -> str:
        return "ivf" if ann.is_ivf(self._fast) else "exact"

    def upsert(
        self,
        rows: Sequence[int],
        item_ids: Sequence[str],
        metadata: Sequence[dict[str, Any]],
        vectors: np.ndarray | None,
    ) -> None:
        """Add or replace rows; `vectors=None` changes metadata only (the text is unchanged)."""
        ids = np.asarray(rows, dtype=np.int64)
        with self._lock:
            if vectors is not None:
                known = np.array([r for r in rows if r in self.item_of], dtype=np.int64)
                if len(known):
                    self._remove_vectors(known)
                contiguous = np.ascontiguousarray(vectors, dtype=np.float32)
                self._exact.add_with_ids(contiguous, ids)
                self._fast.add_with_ids(contiguous, ids)
                if self._journal is not None:
                    self._journal.update(int(r) for r in rows)
            for row, item_id, meta in zip(rows, item_ids, metadata, strict=True):
                self._unpost(row)
                self.item_of[row] = item_id
                self.row_of[item_id] = row
                self.metadata[row] = meta
                for key, value in meta.items():
                    self._postings.setdefault((key, value_key(value)), set()).add(row)

    def remove(self, rows: Iterable[int]) -> None:
        with self._lock:
            gone = [row for row in rows if row in self.item_of]
            if not gone:
                return
            self._remove_vectors(np.asarray(gone, dtype=np.int64))
            if self._journal is not None:
                self._journal.update(gone)
            for row in gone:
                self._unpost(row)
                self.row_of.pop(self.item_of.pop(row), None)
                self.metadata.pop(row, None)

    def matching(self, filters: Filters | None) -> np.ndarray | None:
        """Rows whose metadata equals every filter (a list value means any of its values);
        None when there is no filter."""
        if not filters:
            return None
        with self._lock:
            found: set[int] | None = None
            for key, wanted in filters.items():
                options = wanted if isinstance(wanted, list) else [wanted]
                rows: set[int] = set()
                for option in options:
                    rows |= self._postings.get((key, value_key(option)), set())
                found = rows if found is None else found & rows
                if not found:
                    break
            found = found or set()
            return np.fromiter(found, dtype=np.int64, count=len(found))

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """The k rows with the highest inner product (= cosine), best first: exact below
        `ann_min_items`, recall@10 >= ann.TARGET_RECALL (measured) above."""
        import faiss

        vector = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        with self._lock:
            size = len(self.item_of) if allowed is None else len(allowed)
            k = min(k, size)
            if k <= 0:
                return []
            self._recent[self._served % RECENT] = vector[0]
            self._served += 1
            fetch = min(k + RESCORE, size)
            ivf = ann.is_ivf(self._fast)
            if allowed is None and ivf:
                params = ann.search_params(self._fast, self._nprobe)
                _, ids = self._fast.search(vector, fetch, params=params)
            elif allowed is None:
                _, ids = self._fast.search(vector, fetch)
            elif ivf and len(allowed) <= FILTER_EXACT:
                ids = allowed[None, :]  # few rows: all of them are rescored
            else:
                selector = faiss.IDSelectorBatch(allowed)  # kept alive through the search
                nprobe = math.ceil(self._nprobe * len(self.item_of) / len(allowed))
                params = ann.search_params(self._fast, nprobe, selector)
                _, ids = self._fast.search(vector, fetch, params=params)
            candidates = ids[0][ids[0] >= 0]
            if ivf and len(candidates) < k:  # a wide filter whose rows the lists missed
                candidates = allowed if allowed is not None else self._rows()
            exact = self._exact.reconstruct_batch(candidates) @ vector[0]
        order = np.argsort(-exact, kind="stable")[:k]
        return [(int(candidates[i]), float(exact[i])) for i in order]

    def vectors(self, rows: Sequence[int]) -> np.ndarray:
        """The stored vectors of `rows` (all must be present)."""
        with self._lock:
            if not rows:
                return np.zeros((0, self.dimension), dtype=np.float32)
            found: np.ndarray = self._exact.reconstruct_batch(np.asarray(rows, dtype=np.int64))
            return found

    # --- the approximate stage ---------------------------------------------------------------
    def settle(self, queries: Queries | None = None) -> None:
        """Fit the fast stage to the catalog's size: build the IVF once `ann_min_items` is
        reached, retrain it once the catalog grew GROWTH times, go back to the exact scan
        below half the threshold, retune nprobe when enough own queries arrived. Runs
        beside the live index (searches and writes go on); `queries` gives the project's
        recent query vectors when the index has served too few itself."""
        if self.ann_min_items is None or not self._settling.acquire(blocking=False):
            return
        try:
            size, built = len(self), self._built.get("items", 0)
            if self.kind == "exact" and size >= self.ann_min_items:
                self._rebuild(ivf=True, queries=queries)
            elif self.kind == "ivf" and size < self.ann_min_items // 2:
                self._rebuild(ivf=False, queries=None)
            elif self.kind == "ivf" and size >= GROWTH * built:
                self._rebuild(ivf=True, queries=queries)
            elif self.kind == "ivf" and self._served >= max(MIN_QUERIES, 2 * self._built["own_at"]):
                self._retune()  # on own queries once there are enough, again as they double
        finally:
            self._settling.release()

    def info(self) -> dict[str, Any]:
        """What serves searches: kind, size, and for an IVF its lists, nprobe, the recall@10
        measured and on which queries, build seconds; memory of the vector structures."""
        with self._lock:
            size = len(self.item_of)
            memory = size * (self.dimension * 4 + 16) + ann.stage_bytes(
                self._fast, size, self.dimension
            )
            found: dict[str, Any] = {
                "kind": self.kind,
                "items": size,
                "ann_min_items": self.ann_min_items,
                "memory_bytes": memory,
            }
            if self.kind == "ivf":
                found |= {"nlist": self._fast.nlist, "nprobe": self._nprobe}
                found |= {k: v for k, v in self._built.items() if k != "own_at"}
            return found

    def _rebuild(self, *, ivf: bool, queries: Queries | None) -> None:
        started = time.perf_counter()
        with self._lock:
            rows = self._rows()
            self._journal = set()
        try:
            fast = ann.flat_fp16(self.dimension)
            truth: ann.TopK | None = None
            if ivf:
                nlist = ann.nlist_for(len(rows))
                rng = np.random.default_rng(len(rows))
                sample = rng.choice(rows, min(len(rows), nlist * ann.TRAIN_PER_LIST), False)
                fast = ann.trained_ivf(self._copy(np.sort(sample))[1], nlist)
                sample_q, exclude, source = self._tuning_queries(queries, rows)
                truth = ann.TopK(sample_q, ann.K + 1, exclude)
            for chunk, vectors in self._chunks(rows):
                fast.add_with_ids(vectors, chunk)
                if truth is not None:
                    truth.add(chunk, vectors)
            tuning = None
            if truth is not None:
                tuning = self._tune(fast, truth, source)
            with self._lock:
                self._replay(fast)
                self._fast, self._nprobe = fast, tuning.nprobe if tuning else 0
                self._built = {
                    "items": len(rows),
                    "build_seconds": round(time.perf_counter() - started, 3),
                    "own_at": self._served if source == "own" else 0,
                }
                if tuning is not None:
                    self._built |= {
                        "recall_at_10": round(tuning.recall, 4),
                        "recall_queries": tuning.queries,
                        "recall_source": tuning.source,
                    }
        finally:
            with self._lock:
                self._journal = None

    def _retune(self) -> None:
        """Measure again on the queries this index served, keep the structure."""
        with self._lock:
            rows = self._rows()
        sample_q, exclude, source = self._tuning_queries(None, rows)
        truth = ann.TopK(sample_q, ann.K + 1, exclude)
        for chunk, vectors in self._chunks(rows):
            truth.add(chunk, vectors)
        tuning = self._tune(self._fast, truth, source)
        with self._lock:
            self._nprobe = tuning.nprobe
            self._built |= {
                "recall_at_10": round(tuning.recall, 4),
                "recall_queries": tuning.queries,
                "recall_source": tuning.source,
                "own_at": self._served if source == "own" else 0,
            }

    def _tune(self, fast: Any, truth: ann.TopK, source: str) -> ann.Tuning:
        def served(nprobe: int) -> np.ndarray:
            return self._served_top(fast, truth.queries, nprobe, truth.exclude)

        return ann.tune(served, truth.rows[:, : ann.K], fast.nlist, source)

    def _tuning_queries(
        self, queries: Queries | None, rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None, str]:
        """(query vectors, each query's own row to leave out or None, where they came from):
        served queries, else the caller's, else a sample of items."""
        with self._lock:
            own = self._recent[: min(self._served, RECENT)].copy()
        if len(own) >= MIN_QUERIES:
            return own[-TUNE_QUERIES:], None, "own"
        given = queries() if queries is not None else None
        if given is not None and len(given) >= MIN_QUERIES:
            return np.asarray(given, dtype=np.float32)[:TUNE_QUERIES], None, "given"
        rng = np.random.default_rng(7)
        picked, vectors = self._copy(np.sort(rng.choice(rows, min(len(rows), TUNE_QUERIES), False)))
        return vectors, picked, "items"

    def _served_top(
        self, fast: Any, queries: np.ndarray, nprobe: int, exclude: np.ndarray | None
    ) -> np.ndarray:
        """Each query's top-K as `search` serves it (scan, then float32 rescoring)."""
        fetch = ann.K + RESCORE + 1
        out = np.full((len(queries), ann.K), -1, dtype=np.int64)
        params = ann.search_params(fast, nprobe)
        for start in range(0, len(queries), 32):  # short lock holds: searches go on
            block = queries[start : start + 32]
            with self._lock:
                _, ids = fast.search(block, fetch, params=params)
                for i, found in enumerate(ids):
                    found = np.array([r for r in found.tolist() if r in self.item_of], np.int64)
                    if exclude is not None:
                        found = found[found != exclude[start + i]]
                    scores = self._exact.reconstruct_batch(found) @ block[i]
                    best = found[np.argsort(-scores, kind="stable")[: ann.K]]
                    out[start + i, : len(best)] = best
        return out

    def _rows(self) -> np.ndarray:
        import faiss

        return faiss.vector_to_array(self._exact.id_map).astype(np.int64)

    def _copy(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the rows still present, their vectors)."""
        with self._lock:
            present = np.array([r for r in rows.tolist() if r in self.item_of], dtype=np.int64)
            return present, self._exact.reconstruct_batch(present)

    def _chunks(self, rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Rows and their vectors, CHUNK at a time; rows changed since the build started
        are left to `_replay`."""
        for start in range(0, len(rows), CHUNK):
            with self._lock:
                chunk = rows[start : start + CHUNK]
                if self._journal:
                    chunk = chunk[~np.isin(chunk, list(self._journal))]
                vectors = self._exact.reconstruct_batch(chunk)
            yield chunk, vectors

    def _replay(self, fast: Any) -> None:
        """Bring a stage built beside the live one up to date (lock held)."""
        import faiss

        if not self._journal:
            return
        touched = np.array(sorted(self._journal), dtype=np.int64)
        fast.remove_ids(faiss.IDSelectorBatch(touched))
        present = np.array([r for r in touched.tolist() if r in self.item_of], dtype=np.int64)
        if len(present):
            fast.add_with_ids(self._exact.reconstruct_batch(present), present)

    def _remove_vectors(self, rows: np.ndarray) -> None:
        import faiss

        self._exact.remove_ids(faiss.IDSelectorBatch(rows))
        self._fast.remove_ids(faiss.IDSelectorBatch(rows))

    def _unpost(self, row: int) -> None:
        for key, value in self.metadata.get(row, {}).items():
            posting = self._postings.get((key, value_key(value)))
            if posting is not None:
                posting.discard(row)
                if not posting:
                    del self._postings[(key, value_key(value))]
