"""Search latency at 100,000 items: fineloop's `search` over HTTP against in-process encode +
FAISS search with the same model.

Items are synthetic but realistic short texts: a Banking77 customer message joined with a
StackFAQ question ("... Related: how do I ..."), 100,000 distinct pairs drawn with a fixed
seed, ids `item-000000`..., a small metadata dict. Queries are Banking77 test messages and
StackFAQ test paraphrases (distinct, never items).

- fineloop: `fineloop serve` (SQLite, default settings: queries and items are encoded on
  ONNX Runtime, the model's exported graph, which matched torch's vectors on the probe
  batch; `--server-env FINELOOP_SERVING_BACKEND=torch` measures torch), items upserted
  through the SDK, then the first search builds the index (embeds every item; its time
  is reported as the index build), then sequential `search` calls (k = 10) through the
  SDK over keep-alive HTTP: each one embeds the query, searches the index, applies
  calibration (and adaptation, with no feedback here) and logs the interaction.
- plain: in this process, the same MiniLM (`SentenceTransformer.encode`, normalized) and a
  FAISS exact inner-product index (`IndexFlatIP`, what fineloop's two-stage index returns)
  over the same items, embedded here too (its build time reported alongside).

After warm-up, the measured queries run in alternating blocks (HTTP block, in-process block)
so both sides see the same machine load; p50/p99 over all measured queries, rate =
queries / summed latency. Nothing is cached between runs: the server's data dir is a fresh
temp folder, removed at the end.

    .venv/bin/python bench/search_latency.py            # 15-40 min on 2 cores (two 100k builds)
    .venv/bin/python bench/search_latency.py --quick    # 10,000 items, 200 queries
    .venv/bin/python bench/search_latency.py --quick --server-env FINELOOP_SERVING_THREADS=1 \
        --out search_latency_quick_serving_threads          # a server setting, its own file
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from common import (
    COMPARISON_COLUMNS,
    comparison_row,
    machine_facts,
    percentile,
    print_table,
    ratio,
    running_server,
    write_results,
)
from embedding_common import minilm_path
from fineloop import Client
from shared_data import DATASETS, stackfaq

K = 10
GOAL_P50_MS = 15.0
GOAL_RATE_RATIO = 0.8
BLOCK = 100


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=600, help="Measured queries per side.")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="10,000 items, 200 queries.")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="An environment variable for the server (repeatable), e.g. OMP_NUM_THREADS=1.",
    )
    parser.add_argument(
        "--out", default="search_latency", help="Results file name in bench/results/."
    )
    args = parser.parse_args()
    if args.quick:
        args.items, args.queries, args.warmup = 10_000, 200, 20
    return args


def server_env(args: argparse.Namespace) -> dict[str, str]:
    pairs = [entry.partition("=") for entry in args.server_env]
    bad = [key for key, sign, _ in pairs if not key or not sign]
    if bad:
        raise SystemExit(f"--server-env takes KEY=VALUE; got {args.server_env}")
    return {key: value for key, _, value in pairs}


def banking_messages() -> list[str]:
    texts: list[str] = []
    for name in ("train.csv", "test.csv"):
        with (DATASETS / "banking77" / name).open(newline="") as handle:
            texts += [row["text"].strip() for row in csv.DictReader(handle)]
    return list(dict.fromkeys(texts))


def make_items(n: int) -> tuple[list[dict[str, Any]], list[str]]:
    """n distinct items, and the queries (messages and paraphrases held out of the items)."""
    rng = random.Random(7)
    messages = banking_messages()
    faq = stackfaq()
    questions = list(dict.fromkeys(q for q, _ in faq.train))
    rng.shuffle(messages)
    held_out, messages = messages[:400], messages[400:]
    seen: set[tuple[int, int]] = set()
    items = []
    while len(items) < n:
        pair = (rng.randrange(len(messages)), rng.randrange(len(questions)))
        if pair in seen:
            continue
        seen.add(pair)
        number = len(items)
        items.append(
            {
                "id": f"item-{number:06d}",
                "text": f"{messages[pair[0]]} Related: {questions[pair[1]]}",
                "metadata": {"bucket": number % 20, "kind": "ticket"},
            }
        )
    queries = [q for q, _ in faq.test] + held_out
    rng.shuffle(queries)
    return items, queries


class Plain:
    """The bare path: SentenceTransformer + FAISS IndexFlatIP, in this process."""

    def __init__(self, texts: list[str]) -> None:
        import faiss
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(minilm_path())
        started = time.perf_counter()
        vectors = self.model.encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
        )
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self.build_s = time.perf_counter() - started
        self.encode_ms: list[float] = []
        self.index_ms: list[float] = []

    def search(self, query: str) -> np.ndarray:
        started = time.perf_counter()
        vector = self.model.encode([query], normalize_embeddings=True, convert_to_numpy=True)
        encoded = time.perf_counter()
        _, ids = self.index.search(np.ascontiguousarray(vector, dtype=np.float32), K)
        self.encode_ms.append((encoded - started) * 1000)
        self.index_ms.append((time.perf_counter() - encoded) * 1000)
        return ids[0]


def timed(call: Any, queries: list[str]) -> list[float]:
    out = []
    for query in queries:
        started = time.perf_counter()
        call(query)
        out.append((time.perf_counter() - started) * 1000)
    return out


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": float(np.mean(latencies)),
        "queries_per_s": len(latencies) / (sum(latencies) / 1000),
    }


def main() -> None:
    args = parse_args()
    machine = machine_facts()
    items, queries = make_items(args.items)
    warm = queries[: args.warmup]
    measured = queries[args.warmup : args.warmup + args.queries]
    print(f"plain: embedding {len(items):,} items in-process ...", flush=True)
    plain = Plain([item["text"] for item in items])
    print(f"plain: built in {plain.build_s:.0f}s", flush=True)
    with running_server(env=server_env(args)) as server, Client(server.url, timeout=1800) as client:
        client.create_project("tickets", "embedding", base_model=minilm_path())
        started = time.perf_counter()
        client.upsert_items("tickets", items)
        upsert_s = time.perf_counter() - started
        print(f"fineloop: upserted in {upsert_s:.0f}s; first search builds the index ...")
        started = time.perf_counter()
        first = client.search("tickets", warm[0], k=K)
        build_s = time.perf_counter() - started
        print(f"fineloop: index built by the first search in {build_s:.0f}s", flush=True)
        timed(lambda q: client.search("tickets", q, k=K), warm)
        timed(plain.search, warm)
        plain.encode_ms.clear()
        plain.index_ms.clear()
        http: list[float] = []
        local: list[float] = []
        for block, start in enumerate(range(0, len(measured), BLOCK)):
            chunk = measured[start : start + BLOCK]
            sides = ("http", "local") if block % 2 == 0 else ("local", "http")
            for side in sides:
                if side == "http":
                    http += timed(lambda q: client.search("tickets", q, k=K), chunk)
                else:
                    local += timed(plain.search, chunk)
        agree = same_top(client, plain, measured[:50])
    report(args, machine, items, http, local, plain, upsert_s, build_s, first, agree)


def same_top(client: Client, plain: Plain, queries: list[str]) -> float:
    """Share of queries whose top-10 ids agree between fineloop and the bare path."""
    same = 0
    for query in queries:
        ours = [hit["id"] for hit in client.search("tickets", query, k=K)["items"]]
        theirs = [f"item-{int(i):06d}" for i in plain.search(query)]
        same += set(ours) == set(theirs)
    return same / len(queries)


def report(
    args: argparse.Namespace,
    machine: dict[str, Any],
    items: list[dict[str, Any]],
    http: list[float],
    local: list[float],
    plain: Plain,
    upsert_s: float,
    build_s: float,
    first: dict[str, Any],
    agree: float,
) -> None:
    ours, theirs = summary(http), summary(local)
    rate_ratio = ratio(ours["queries_per_s"], theirs["queries_per_s"])
    met = {"p50": ours["p50_ms"] <= GOAL_P50_MS, "rate_ratio": rate_ratio >= GOAL_RATE_RATIO}
    print_table(
        f"search at {len(items):,} items, k = {K}: {len(http)} sequential queries per side "
        f"after {args.warmup} warm-up (load {machine['load_average'][0]})",
        COMPARISON_COLUMNS,
        [
            comparison_row(
                "p50 ms", ours["p50_ms"], theirs["p50_ms"], f"<= {GOAL_P50_MS:g}", met["p50"]
            ),
            comparison_row("p99 ms", ours["p99_ms"], theirs["p99_ms"]),
            comparison_row(
                "queries/s",
                ours["queries_per_s"],
                theirs["queries_per_s"],
                f"ratio >= {GOAL_RATE_RATIO}",
                met["rate_ratio"],
            ),
            comparison_row("index build s", build_s, plain.build_s),
            comparison_row("upsert s (HTTP, SDK)", upsert_s, float("nan")),
            ["plain: encode p50 ms", "", percentile(plain.encode_ms, 50), "", "", ""],
            ["plain: FAISS search p50 ms", "", percentile(plain.index_ms, 50), "", "", ""],
            ["same top-10 ids (50 queries)", agree, "", "", "", ""],
        ],
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
                "items_text": "Banking77 message + ' Related: ' + StackFAQ question",
                "plain": "SentenceTransformer.encode + faiss.IndexFlatIP, in-process",
                "fineloop": "SDK search over HTTP keep-alive, SQLite store, interaction logged",
                "model_version": first["model_version"],
            },
            "cases": [
                {
                    "case": f"{len(items):,} items",
                    "fineloop": ours | {"index_build_s": build_s, "upsert_s": upsert_s},
                    "base": {},
                    "plain": theirs
                    | {
                        "index_build_s": plain.build_s,
                        "encode_p50_ms": percentile(plain.encode_ms, 50),
                        "faiss_p50_ms": percentile(plain.index_ms, 50),
                    },
                    "ratio_rate_fineloop_to_plain": rate_ratio,
                    "same_top10_share": agree,
                    "met": met,
                }
            ],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
