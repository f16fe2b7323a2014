"""Search latency at 100,000 and 1,000,000 items: fineloop's index in-process and `search`
over HTTP against bare FAISS exact search; recall@10 of the approximate index.

Encoding a million texts with MiniLM is out of reach on 2 CPU cores (100k took ~17 min), so
item vectors are synthetic but shaped like the real ones: ~3,000 real short texts
(StackFAQ question paraphrases and Banking77 messages) are embedded with the packaged
MiniLM, and every item is a noisy mixture of two of them (0.8 a + 0.4 b + Gaussian noise
of norm 0.5, renormalised): topical clusters, MiniLM's geometry. Queries are *held-out*
real texts embedded by the same model: 200 tune the approximate index's nprobe (standing in
for the project's recent queries), the others are measured.

- fineloop, in-process: `VectorIndex` with default settings (exact fp16 scan + float32
  rescoring below `ann_min_items` = 200,000, IVF with tuned nprobe above): `search` p50/p99,
  recall@10 against exact search on the measured queries, build seconds, memory.
- fineloop, HTTP (100k; `--http-1m` adds 1M): a real `fineloop serve` child; items upserted
  through the SDK with distinct texts, their synthetic vectors written beforehand to the
  version's on-disk vector cache (persist.py, keyed by text hash) which the index build
  reads instead of encoding — so the build measured is the index's, not MiniLM's. Each
  `search` encodes the query text with the served model (ONNX Runtime), searches, applies
  calibration and logs the interaction.
- plain: `faiss.IndexFlatIP` over the same vectors, one query at a time, in this process.

    .venv/bin/python bench/search_latency.py            # 100k and 1M, ~15 min on 2 cores
    .venv/bin/python bench/search_latency.py --quick    # 20k and 60k items, 100 queries
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from common import machine_facts, percentile, print_table, running_server, write_results
from embedding_common import minilm_path
from fineloop import Client
from shared_data import DATASETS, stackfaq

K = 10
GOAL_P50_MS = 10.0
GOAL_RECALL = 0.98
TUNE_QUERIES = 200


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=300, help="Measured queries per side.")
    parser.add_argument("--http-1m", action="store_true", help="Also serve 1M over HTTP.")
    parser.add_argument("--quick", action="store_true", help="20k and 60k items, 100 queries.")
    parser.add_argument(
        "--ann-min-items", type=int, default=None, help="Override the setting (all sides)."
    )
    parser.add_argument("--out", default="search_latency")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.queries, args.out = [20_000, 60_000], 100, "search_latency_quick"
        args.ann_min_items = args.ann_min_items or 50_000  # the 60k case is approximate
    return args


def real_texts() -> tuple[list[str], list[str]]:
    """(texts the items are mixed from, held-out query texts), distinct, fixed seed."""
    rng = random.Random(7)
    faq = stackfaq()
    with (DATASETS / "banking77" / "train.csv").open(newline="") as handle:
        banking = [row["text"].strip() for row in csv.DictReader(handle)]
    sources = list(dict.fromkeys([q for q, _ in faq.train] + banking[:2000]))
    held = list(dict.fromkeys(q for q, _ in faq.test))
    with (DATASETS / "banking77" / "test.csv").open(newline="") as handle:
        held += [row["text"].strip() for row in csv.DictReader(handle)]
    held = [t for t in dict.fromkeys(held) if t not in set(sources)]
    rng.shuffle(sources)
    rng.shuffle(held)
    return sources[:3000], held


def synthetic(base: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        a, b = base[rng.integers(0, len(base), m)], base[rng.integers(0, len(base), m)]
        noise = rng.standard_normal((m, base.shape[1]), dtype=np.float32)
        noise *= 0.5 / np.sqrt(base.shape[1])
        block = 0.8 * a + 0.4 * b + noise
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def latencies(search: Any, queries: np.ndarray | list[str]) -> list[float]:
    out = []
    for query in queries:
        started = time.perf_counter()
        search(query)
        out.append((time.perf_counter() - started) * 1000)
    return out


def stats(times: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99)}


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    hits = sum(len(set(f) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def in_process(
    vectors: np.ndarray, tune: np.ndarray, queries: np.ndarray, ann_min_items: int | None
) -> dict[str, Any]:
    import faiss

    from fineloop.config import Settings
    from fineloop.tasks.embedding.serving.index import VectorIndex

    n, dim = vectors.shape
    before = rss_mb()
    started = time.perf_counter()
    plain = faiss.IndexFlatIP(dim)
    plain.add(vectors)
    plain_build = time.perf_counter() - started
    plain_mb = rss_mb() - before
    _, truth = plain.search(queries, K)
    before = rss_mb()
    started = time.perf_counter()
    index = VectorIndex(dim, ann_min_items or Settings().ann_min_items)
    for start in range(0, n, 50_000):
        rows = list(range(start, min(n, start + 50_000)))
        index.upsert(
            rows,
            [str(r) for r in rows],
            [{"bucket": r % 20} for r in rows],
            vectors[rows[0] : rows[-1] + 1],
        )
    index.settle(lambda: tune)
    build = time.perf_counter() - started
    ours_mb = rss_mb() - before
    info = index.info()
    latencies(lambda q: index.search(q, K), queries[:30])  # warm-up
    latencies(lambda q: plain.search(q[None, :], K), queries[:30])
    ours_ms, plain_ms = [], []
    for start in range(0, len(queries), 50):  # alternating blocks: both see the same load
        block = queries[start : start + 50]
        ours_ms += latencies(lambda q: index.search(q, K), block)
        plain_ms += latencies(lambda q: plain.search(q[None, :], K), block)
    found = [[r for r, _ in index.search(q, K)] for q in queries]
    allowed = index.matching({"bucket": 3})
    filtered_ms = latencies(lambda q: index.search(q, K, allowed), queries[:100])
    return {
        "fineloop": stats(ours_ms)
        | {
            "recall_at_10": recall(found, truth),
            "filtered_p50_ms": percentile(filtered_ms, 50),
            "index_build_s": build,
            "index_memory_mb": info["memory_bytes"] / 2**20,
            "rss_growth_mb": ours_mb,
            "nprobe": info.get("nprobe", 0),
            "nlist": info.get("nlist", 0),
            "tuned_recall_at_10": info.get("recall_at_10", 1.0),
        },
        "plain": stats(plain_ms)
        | {"recall_at_10": 1.0, "index_build_s": plain_build, "rss_growth_mb": plain_mb},
        "kind": info["kind"],
    }


def over_http(
    texts: list[str], vectors: np.ndarray, queries: list[str], ann_min_items: int | None
) -> dict[str, Any]:
    """`search` through a `fineloop serve` child whose vector cache holds the items."""
    from fineloop import artifacts
    from fineloop.config import Settings
    from fineloop.serving.versions import ensure_champion
    from fineloop.store import Store
    from fineloop.tasks.embedding.serving.persist import VectorCache, text_key

    env = {"FINELOOP_ANN_MIN_ITEMS": str(ann_min_items)} if ann_min_items else {}
    with running_server(env) as server, Client(server.url, timeout=1800) as client:
        client.create_project("tickets", "embedding", base_model=minilm_path())
        # v0 (the base model) is registered here, as the first search would, so its
        # vector file can be written before the items arrive and start the build
        settings = Settings(data_dir=server.data_dir)
        version = ensure_champion(Store.open(settings, migrate_schema=False), "tickets")
        number, version_id = version.number, version.id
        # the per-version file name, which the serving build reads (also as a fallback)
        folder = artifacts.root(settings) / "tickets" / "index"
        cache = VectorCache(folder / f"v{number}-{version_id}.npz", vectors.shape[1])
        cache.save(np.array([text_key(t) for t in texts], dtype=np.int64), vectors)
        started = time.perf_counter()
        for start in range(0, len(texts), 5_000):
            client.upsert_items(
                "tickets",
                [
                    {"id": f"item-{i:07d}", "text": texts[i], "metadata": {"bucket": i % 20}}
                    for i in range(start, min(len(texts), start + 5_000))
                ],
            )
        upsert_s = time.perf_counter() - started
        started = time.perf_counter()
        client.search("tickets", queries[0], k=K)  # waits for the build (SDK retries 503)
        build_s = time.perf_counter() - started
        latencies(lambda q: client.search("tickets", q, k=K), queries[1:31])
        times = latencies(lambda q: client.search("tickets", q, k=K), queries[31:])
        index = client.index_status("tickets")
        return stats(times) | {
            "first_search_s": build_s,
            "upsert_s": upsert_s,
            "server_rss_mb": rss_mb(server.process.pid),
            "index": index,
        }


def main() -> None:
    args = parse_args()
    machine = machine_facts()
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path())
    sources, held = real_texts()
    started = time.perf_counter()
    base = model.encode(sources, batch_size=64, normalize_embeddings=True)
    query_texts = held[: TUNE_QUERIES + args.queries]
    embedded = model.encode(query_texts, batch_size=64, normalize_embeddings=True)
    print(
        f"embedded {len(sources) + len(query_texts)} real texts in "
        f"{time.perf_counter() - started:.0f}s",
        flush=True,
    )
    tune, queries = embedded[:TUNE_QUERIES], embedded[TUNE_QUERIES:]
    cases = []
    for size in args.sizes:
        vectors = synthetic(np.asarray(base, dtype=np.float32), size)
        print(f"{size:,} items: in-process ...", flush=True)
        case = in_process(vectors, tune, queries, args.ann_min_items)
        if size <= 100_000 or args.http_1m:
            print(f"{size:,} items: over HTTP ...", flush=True)
            texts = [f"item {i}: {sources[i % len(sources)]}" for i in range(size)]
            try:
                case["http"] = over_http(
                    texts, vectors, query_texts[TUNE_QUERIES:], args.ann_min_items
                )
            except Exception as error:  # keep the in-process numbers of a long run
                print(f"HTTP case failed: {error!r}", flush=True)
                case["http_error"] = repr(error)
        cases.append((size, case))
        del vectors
    report(args, machine, cases)


def report(args: argparse.Namespace, machine: dict[str, Any], cases: list[Any]) -> None:
    rows, out = [], []
    for size, case in cases:
        ours, plain, http = case["fineloop"], case["plain"], case.get("http")
        label = f"{size:,} items ({case['kind']})"
        rows += [
            [label, "", "", ""],
            [
                "  in-process p50 / p99 ms",
                f"{ours['p50_ms']:.2f} / {ours['p99_ms']:.2f}",
                f"{plain['p50_ms']:.2f} / {plain['p99_ms']:.2f}",
                "",
            ],
            [
                "  HTTP search p50 / p99 ms",
                f"{http['p50_ms']:.2f} / {http['p99_ms']:.2f}" if http else "not run",
                "",
                f"p50 <= {GOAL_P50_MS:g}",
            ],
            ["  recall@10 vs exact", ours["recall_at_10"], 1.0, f">= {GOAL_RECALL}"],
            ["  filtered (5%) p50 ms", ours["filtered_p50_ms"], "", ""],
            ["  nprobe / nlist", f"{ours['nprobe']} / {ours['nlist']}", "", ""],
            ["  build s", ours["index_build_s"], plain["index_build_s"], ""],
            [
                "  index memory MB (RSS growth)",
                f"{ours['index_memory_mb']:.0f} ({ours['rss_growth_mb']:.0f})",
                f"({plain['rss_growth_mb']:.0f})",
                "",
            ],
        ]
        met = {"recall": ours["recall_at_10"] >= GOAL_RECALL}
        if http:
            met["http_p50"] = http["p50_ms"] <= GOAL_P50_MS
        out.append(
            {
                "case": f"{size:,} items",
                "kind": case["kind"],
                "fineloop": ours
                | (
                    {f"http_{k}": v for k, v in http.items() if isinstance(v, (int, float))}
                    if http
                    else {}
                ),
                "base": {},
                "plain": plain,
                "http_index_status": http.get("index") if http else None,
                "met": met,
            }
        )
    print_table(
        f"search, k = {K}, {args.queries} measured queries (load {machine['load_average'][0]}; "
        "2 shared cores: noisy)",
        ("metric", "fineloop", "plain (FAISS flat)", "goal"),
        rows,
    )
    path = write_results(
        args.out,
        {
            "benchmark": "search_latency",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine | {"load_average_at_end": machine_facts()["load_average"]},
            "config": vars(args)
            | {
                "k": K,
                "items": "synthetic: 0.8 a + 0.4 b + noise (norm 0.5) of MiniLM embeddings of "
                "3,000 real texts (StackFAQ paraphrases, Banking77), renormalised",
                "queries": f"held-out real texts embedded by MiniLM; {TUNE_QUERIES} tune nprobe",
                "plain": "faiss.IndexFlatIP, one query at a time, in-process",
                "fineloop": "VectorIndex in-process; HTTP: fineloop serve + SDK search",
                "pid": os.getpid(),
            },
            "cases": out,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
