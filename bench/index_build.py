"""Index build speed: texts/s of fineloop's background index build against a bare
sentence-transformers `encode` of the same texts with the same model.

Texts: Banking77 training messages (short) and the StackFAQ threads (title + answers, long),
so batches of very different lengths meet, as in a real catalog. Model: the packaged
all-MiniLM-L6-v2.

- fineloop: a fresh `fineloop serve` (SQLite, empty data dir, so no vector is cached)
  serving a one-item project (its model loaded: the first build, model load included, is
  reported apart as `first_build_s`); then the texts are upserted through the SDK in
  requests of 2,000, which the server embeds and indexes in the background; the time runs
  from the first upsert until `GET /v1/projects/{p}/index` shows every text indexed and no
  build running (so it includes the upserts themselves). Default settings
  (`serving_backend=auto`: ONNX Runtime where it matches torch), and a second case with
  `FINELOOP_SERVING_BACKEND=torch`, the bare library's own runtime.
- plain: in this process, `SentenceTransformer(minilm).encode(texts, batch_size=64,
  normalize_embeddings=True)` (the batch size fineloop's build uses), while the server idles.

Rounds alternate fineloop, plain, fineloop, plain, ...; medians are reported. Goal: fineloop
texts/s >= 0.95 x plain.

    .venv/bin/python bench/index_build.py              # 8,000 + 125 texts, 3 rounds (~6 min)
    .venv/bin/python bench/index_build.py --quick      # 1,000 + 125 texts, 1 round
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    machine_facts,
    median,
    print_table,
    ratio,
    running_server,
    write_results,
)
from embedding_common import minilm_path
from fineloop import Client
from shared_data import banking77, stackfaq

PROJECT = "catalog"


def catalog_texts(short: int, seed: int = 7) -> list[str]:
    """`short` distinct Banking77 messages and every StackFAQ thread, shuffled."""
    messages = sorted({text for text, _ in banking77().train})
    random.Random(seed).shuffle(messages)
    texts = messages[:short] + list(stackfaq().items.values())
    random.Random(seed + 1).shuffle(texts)
    return texts


def fineloop_build(texts: list[str], env: dict[str, str]) -> dict[str, float]:
    """Serve a one-item project (the model loaded, its index built), then upsert `texts`
    and time until the background build has embedded and indexed every one of them."""
    with running_server(env=env) as server, Client(server.url, timeout=600) as client:
        client.create_project(PROJECT, "embedding", base_model=minilm_path())
        client.upsert_items(PROJECT, [{"id": "warm", "text": "warm up"}])
        loaded = time.perf_counter()
        client.search(PROJECT, "warm up", k=1)  # waits through the first build's 503s
        first = time.perf_counter() - loaded
        started = time.perf_counter()
        for start in range(0, len(texts), 2_000):
            rows = [
                {"id": f"t{start + i}", "text": text}
                for i, text in enumerate(texts[start : start + 2_000])
            ]
            client.upsert_items(PROJECT, rows)
        while True:
            status = client.index_status(PROJECT)
            (champion,) = [v for v in status["versions"] if v["version"] == status["champion"]]
            if champion["state"] == "failed":
                raise RuntimeError(f"index build failed: {champion['error']}")
            if champion["items_indexed"] == len(texts) + 1 and not champion["building"]:
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - started
    return {"texts_per_s": len(texts) / seconds, "build_s": seconds, "first_build_s": first}


def plain_encode(texts: list[str]) -> dict[str, float]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(minilm_path(), device="cpu")
    model.encode(texts[:64], batch_size=64)  # warm-up, as the server's load does
    started = time.perf_counter()
    model.encode(texts, batch_size=64, normalize_embeddings=True)
    seconds = time.perf_counter() - started
    return {"texts_per_s": len(texts) / seconds, "build_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", type=int, default=8_000, help="Banking77 messages")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.short, args.rounds = 1_000, 1
    texts = catalog_texts(args.short)
    chars = sorted(len(t) for t in texts)
    cases: list[dict[str, Any]] = []
    for name, env in (
        ("default (auto: ONNX Runtime)", {}),
        ("FINELOOP_SERVING_BACKEND=torch", {"FINELOOP_SERVING_BACKEND": "torch"}),
    ):
        ours: list[dict[str, float]] = []
        bare: list[dict[str, float]] = []
        for round_ in range(args.rounds):
            print(f"{name}: round {round_ + 1}/{args.rounds} ...", flush=True)
            ours.append(fineloop_build(texts, env))
            bare.append(plain_encode(texts))
        fineloop = {key: median([r[key] for r in ours]) for key in ours[0]}
        plain = {key: median([r[key] for r in bare]) for key in bare[0]}
        cases.append(
            {
                "case": name,
                "fineloop": fineloop,
                "base": {},
                "plain": plain,
                "ratio_texts_per_s": ratio(fineloop["texts_per_s"], plain["texts_per_s"]),
                "rounds": {"fineloop": ours, "plain": bare},
                "met": {
                    "texts_per_s_ratio_ge_0.95": ratio(
                        fineloop["texts_per_s"], plain["texts_per_s"]
                    )
                    >= 0.95
                },
            }
        )
    rows = []
    for case in cases:
        f, p = case["fineloop"], case["plain"]
        rows.append(
            [
                case["case"],
                f"{f['texts_per_s']:.1f}",
                f"{p['texts_per_s']:.1f}",
                f"{case['ratio_texts_per_s']:.2f}",
                f"{f['build_s']:.1f} ({f['first_build_s']:.1f})",
                f"{p['build_s']:.1f}",
            ]
        )
    print_table(
        f"index build: {len(texts):,} texts (chars p50 {chars[len(chars) // 2]}, max "
        f"{chars[-1]:,}), MiniLM, medians of {args.rounds}; load {os.getloadavg()[0]:.1f}",
        [
            "case",
            "fineloop texts/s",
            "plain texts/s",
            "ratio (goal ≥ 0.95)",
            "fineloop s (first build s)",
            "plain s",
        ],
        rows,
    )
    path = write_results(
        "index_build",
        {
            "benchmark": "index_build",
            "machine": machine_facts(),
            "config": {
                "texts": len(texts),
                "short": args.short,
                "rounds": args.rounds,
                "batch_size": 64,
                "quick": args.quick,
            },
            "cases": cases,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
