"""Which vector index serves `search`: exact flat FAISS or usearch HNSW, measured.

100,000 random unit vectors of 384 dimensions (MiniLM's width; random vectors are the hard
case for a graph index, real embeddings cluster and make HNSW look better), 200 single-vector
queries, k = 10. For each index: build time, query p50/p99 one query at a time (as `search`
calls it), recall@10 against exact inner products, and a filtered query (a 10% subset;
FAISS through an IDSelector, usearch by over-fetching 20x and dropping the rest). The
`fineloop` row is `fineloop.tasks.embedding.serving.index.VectorIndex` itself: a FAISS
fp16 scan proposing k + 32 candidates rescored exactly from float32 vectors.

    .venv/bin/python bench/index_choice.py            # 100k x 384
    .venv/bin/python bench/index_choice.py --quick    # 20k x 384, a smoke run
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from common import machine_facts, percentile, print_table, write_results

K = 10


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def timed_queries(
    queries: np.ndarray, search: Callable[[np.ndarray], np.ndarray]
) -> tuple[list[float], list[np.ndarray]]:
    times, found = [], []
    for query in queries:
        start = time.perf_counter()
        ids = search(query)
        times.append((time.perf_counter() - start) * 1000)
        found.append(ids)
    return times, found


def recall(found: list[np.ndarray], truth: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def faiss_case(vectors: np.ndarray, queries: np.ndarray, subset: np.ndarray) -> dict[str, Any]:
    import faiss

    start = time.perf_counter()
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
    build_s = time.perf_counter() - start
    times, found = timed_queries(queries, lambda q: index.search(q[None, :], K)[1][0])
    selector = faiss.IDSelectorBatch(subset)
    params = faiss.SearchParameters(sel=selector)
    filtered, _ = timed_queries(queries, lambda q: index.search(q[None, :], K, params=params)[1][0])
    return {"build_s": build_s, "times": times, "found": found, "filtered_times": filtered}


def fineloop_case(vectors: np.ndarray, queries: np.ndarray, subset: np.ndarray) -> dict[str, Any]:
    from fineloop.tasks.embedding.serving.index import VectorIndex

    rows = list(range(len(vectors)))
    start = time.perf_counter()
    index = VectorIndex(vectors.shape[1])
    index.upsert(rows, [str(r) for r in rows], [{} for _ in rows], vectors)
    build_s = time.perf_counter() - start

    def ids(hits: list[tuple[int, float]]) -> np.ndarray:
        return np.array([row for row, _ in hits])

    times, found = timed_queries(queries, lambda q: ids(index.search(q, K)))
    filtered, _ = timed_queries(queries, lambda q: ids(index.search(q, K, subset)))
    return {"build_s": build_s, "times": times, "found": found, "filtered_times": filtered}


def usearch_case(
    vectors: np.ndarray, queries: np.ndarray, subset: np.ndarray
) -> tuple[dict[str, Any], dict[str, Any]]:
    from usearch.index import Index

    start = time.perf_counter()
    index = Index(ndim=vectors.shape[1], metric="ip", dtype="f32")
    index.add(np.arange(len(vectors), dtype=np.uint64), vectors)
    build_s = time.perf_counter() - start
    times, found = timed_queries(queries, lambda q: index.search(q, K).keys)
    # A wider beam buys recall with time: the setting a user would have to tune.
    index.expansion_search = 1024
    wide_times, wide_found = timed_queries(queries, lambda q: index.search(q, K).keys)
    allowed = set(subset.tolist())
    # usearch has no predicate filter in its Python API; over-fetch and keep the allowed keys.
    over = K * 20
    filtered, _ = timed_queries(
        queries, lambda q: np.array([k for k in index.search(q, over).keys if k in allowed][:K])
    )
    wide = {"build_s": build_s, "times": wide_times, "found": wide_found, "filtered_times": []}
    return {"build_s": build_s, "times": times, "found": found, "filtered_times": filtered}, wide


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k vectors instead of 100k")
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    n = 20_000 if args.quick else 100_000
    rng = np.random.default_rng(7)
    vectors = unit_vectors(rng, n, args.dim)
    queries = unit_vectors(rng, 200, args.dim)
    subset = np.sort(rng.choice(n, n // 10, replace=False)).astype(np.int64)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :K]
    cases = {"faiss flat (exact)": faiss_case(vectors, queries, subset)}
    cases["fineloop: faiss fp16 + exact rescoring"] = fineloop_case(vectors, queries, subset)
    cases["usearch hnsw (default)"], cases["usearch hnsw (ef=1024)"] = usearch_case(
        vectors, queries, subset
    )
    rows, results = [], []
    for name, case in cases.items():
        metrics = {
            "build_s": case["build_s"],
            "query_p50_ms": percentile(case["times"], 50),
            "query_p99_ms": percentile(case["times"], 99),
            "recall@10": recall(case["found"], truth),
            "filtered_p50_ms": (
                percentile(case["filtered_times"], 50) if case["filtered_times"] else None
            ),
        }
        results.append({"case": name, "fineloop": metrics, "base": {}, "plain": {}})
        rows.append([name, *metrics.values()])
    print_table(
        f"vector index, {n:,} x {args.dim}, k={K}, one query at a time",
        ["index", "build s", "p50 ms", "p99 ms", "recall@10", "filtered p50 ms"],
        rows,
    )
    write_results(
        "index_choice",
        {
            "benchmark": "index_choice",
            "machine": machine_facts(),
            "config": {"n": n, "dim": args.dim, "k": K, "queries": len(queries)},
            "cases": results,
        },
    )


if __name__ == "__main__":
    main()
