"""The fast stage of a large `VectorIndex`: FAISS IVF, with `nprobe` tuned to a recall.

Why IVF and not a graph: an inverted file keeps what the exact index offers — items added
and removed by id in place, metadata filters through an `IDSelector` — and builds in
minutes at 1M items on 2 cores, where usearch HNSW took 70 s at 100k and reached recall@10
0.59 at best (bench/index_choice.py). The lists hold fp16 codes (half the memory traffic
of float32), and `VectorIndex` rescores their candidates from float32 as it does below the
threshold, so only the choice of candidates is approximate.

`nprobe` (lists scanned per query) is not a guess: it is the smallest value whose served
top-10 (scan + rescoring, exactly as `search` runs) finds `TARGET_RECALL` of the exact
top-10 on a sample of queries — the project's own when it has them, else item vectors with
the item itself left out of both lists.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

K = 10  # recall@10 is what the tuning targets
TARGET_RECALL = 0.98
TRAIN_PER_LIST = 40  # training points per list: FAISS's k-means wants >= 39
KMEANS_ITERATIONS = 10  # the lists need only be roughly balanced; nprobe absorbs the rest
PROBES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)

Chunks = Iterable[tuple[np.ndarray, np.ndarray]]  # (rows, float32 vectors)


def nlist_for(items: int) -> int:
    """About 2 sqrt(n) lists (4 sqrt(n) doubled the k-means and assignment time of a 1M
    build on 2 cores), and never fewer training points per list than k-means needs."""
    return max(1, min(int(2 * math.sqrt(items)), items // TRAIN_PER_LIST))


def flat_fp16(dimension: int) -> Any:
    """The exact fast stage: a half-precision scan of every vector."""
    import faiss

    half = faiss.ScalarQuantizer.QT_fp16
    return faiss.IndexIDMap2(
        faiss.IndexScalarQuantizer(dimension, half, faiss.METRIC_INNER_PRODUCT)
    )


def trained_ivf(sample: np.ndarray, nlist: int) -> Any:
    """An empty IVF with fp16 codes whose lists were trained on `sample`."""
    import faiss

    dimension = sample.shape[1]
    quantizer = faiss.IndexFlatIP(dimension)
    half = faiss.ScalarQuantizer.QT_fp16
    ivf = faiss.IndexIVFScalarQuantizer(
        quantizer, dimension, nlist, half, faiss.METRIC_INNER_PRODUCT
    )
    ivf.cp.niter = KMEANS_ITERATIONS
    ivf.cp.min_points_per_centroid = 1  # the sample is sized by TRAIN_PER_LIST already
    ivf.train(np.ascontiguousarray(sample, dtype=np.float32))
    return ivf


def search_params(fast: Any, nprobe: int, selector: Any = None) -> Any:
    """FAISS search parameters for the stage: IVF ones with nprobe, else plain ones."""
    import faiss

    params: Any = faiss.SearchParametersIVF() if is_ivf(fast) else faiss.SearchParameters()
    if is_ivf(fast):
        params.nprobe = max(1, min(nprobe, fast.nlist))
    if selector is not None:
        params.sel = selector
    return params


def is_ivf(fast: Any) -> bool:
    return hasattr(fast, "nlist")


def stage_bytes(fast: Any, items: int, dimension: int) -> int:
    """Memory of the fast stage: fp16 codes and ids (plus an id map, or the centroids)."""
    codes = items * (dimension * 2 + 8)
    if is_ivf(fast):
        return codes + int(fast.nlist) * dimension * 4
    return codes + items * 16  # IndexIDMap2's reverse map


class TopK:
    """The exact top-k of each query over vectors seen chunk by chunk (the ground truth)."""

    def __init__(self, queries: np.ndarray, k: int, exclude: np.ndarray | None) -> None:
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.k = k
        self.exclude = exclude
        self.scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        self.rows = np.full((len(queries), k), -1, dtype=np.int64)

    def add(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        if not len(rows):
            return
        scores = self.queries @ vectors.T
        if self.exclude is not None:
            scores[rows[None, :] == self.exclude[:, None]] = -np.inf
        width = min(self.k, len(rows))
        best = np.argpartition(-scores, width - 1, axis=1)[:, :width]
        both_scores = np.concatenate([self.scores, np.take_along_axis(scores, best, 1)], 1)
        both_rows = np.concatenate([self.rows, rows[best]], 1)
        keep = np.argsort(-both_scores, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(both_scores, keep, 1)
        self.rows = np.take_along_axis(both_rows, keep, 1)


@dataclass(frozen=True)
class Tuning:
    """The nprobe chosen and the recall@10 it was measured at."""

    nprobe: int
    recall: float
    queries: int
    source: str  # "own" (served queries), "given" (passed by the caller), "items"


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the exact top-k rows found, over all queries."""
    hits = sum(
        len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist()))
        for f, t in zip(found, truth, strict=True)
    )
    return hits / max(int((truth >= 0).sum()), 1)


def tune(served: Callable[[int], np.ndarray], truth: np.ndarray, nlist: int, source: str) -> Tuning:
    """The smallest nprobe whose served top-k (`served(nprobe)`, one row per query)
    reaches TARGET_RECALL of `truth`; all lists when none of PROBES does."""
    measured = 0.0
    for nprobe in [p for p in PROBES if p < nlist] + [nlist]:
        measured = recall(served(nprobe), truth)
        if measured >= TARGET_RECALL:
            return Tuning(nprobe, measured, len(truth), source)
    return Tuning(nlist, measured, len(truth), source)
