"""Training throughput: fineloop's embedding training against bare SentenceTransformerTrainer.

Data: a fineloop snapshot built by a real job from Banking77 label events (N training
queries per intent; item = the intent name), so both sides read the very same rows.

1. Identical settings: fineloop with loss mnrl, hard_negatives = 0 (so its rows are the
   snapshot's (anchor, positive) pairs), fp32, batch 32, 1 epoch, lr 2e-5, warmup 0.1,
   weight decay 0.01, seed 13, against the bare trainer with exactly these values, the same
   loss and the same no-duplicates batch sampler, fed the same train split.
2. Defaults: fineloop's EmbeddingTrainConfig defaults (mnrl with 1 hard negative, precision
   auto = bf16 on a CPU with AVX-512 BF16) against the bare trainer's defaults (fp32, the
   default batch sampler), both with batch 32 and 1 epoch so the runs are comparable.

fineloop is timed by calling `fineloop.tasks.embedding.train.train` in this process (the
job's train step, without the job around it), alternating with the bare trainer, `--repeats`
times each; medians are reported. Two numbers per fineloop run: `fit` (the trainer's own
`train_runtime`: the optimisation loop, which for fineloop includes its per-epoch
validation and checkpoint) and `train step` (the whole call: load the base, score it on
validation, fit, save, reload and score in fp32). Pairs/s = train rows x epochs / seconds.
One job per setting also runs through the API, to show the whole job's wall time (snapshot,
training, evaluating base/champion/candidate on the test split, registering).

    .venv/bin/python bench/train_throughput.py            # ~12 min on 2 cores
    .venv/bin/python bench/train_throughput.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import machine_facts, median, print_table, ratio, running_server, write_results
from embedding_common import (
    SEED,
    bf16_default,
    create_project,
    minilm_path,
    run_job,
    train_runtime,
    trainer_state,
)
from fineloop import Client
from shared_data import banking77

GOAL_RATIO = 0.95
IDENTICAL = {
    "loss": "mnrl",
    "hard_negatives": 0,
    "precision": "fp32",
    "epochs": 1,
    "batch_size": 32,
    "learning_rate": 2e-5,
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
}
DEFAULTS = {"epochs": 1, "batch_size": 32}  # everything else: EmbeddingTrainConfig()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-intent", type=int, default=20, help="Training queries/intent.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per side and setting.")
    parser.add_argument("--quick", action="store_true", help="4 queries/intent, 1 repeat.")
    args = parser.parse_args()
    if args.quick:
        args.per_intent, args.repeats = 4, 1
    return args


def fineloop_run(snapshot: Path, overrides: dict[str, Any], rows: int) -> dict[str, float]:
    from fineloop.tasks.base import NullSink
    from fineloop.tasks.embedding.config import EmbeddingTrainConfig
    from fineloop.tasks.embedding.train import train

    config = EmbeddingTrainConfig.parse(overrides)
    out = Path(tempfile.mkdtemp(prefix="fineloop-tp-"))
    try:
        started = time.perf_counter()
        train(snapshot, minilm_path(), config, out / "model", NullSink())
        step = time.perf_counter() - started
        info = trainer_state(out / "model")
        fit = train_runtime(info["trainer"]["log_history"]) or float("nan")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    epochs = config.epochs
    return {
        "fit_s": fit,
        "train_step_s": step,
        "fit_pairs_per_s": rows * epochs / fit,
        "step_pairs_per_s": rows * epochs / step,
        "precision": 1.0 if info["precision"] == "bf16" else 0.0,
    }


def bare_run(
    anchors: list[str], positives: list[str], settings: dict[str, Any] | None
) -> dict[str, float]:
    """SentenceTransformerTrainer + MNRL; `settings` None = the library's defaults (batch
    size and epochs aside)."""
    from datasets import Dataset  # type: ignore[import-untyped]
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    out = Path(tempfile.mkdtemp(prefix="bare-tp-"))
    try:
        started = time.perf_counter()
        model = SentenceTransformer(minilm_path())
        model.model_card_data.local_files_only = True
        data = Dataset.from_dict({"anchor": anchors, "positive": positives})
        common = {
            "output_dir": str(out),
            "num_train_epochs": 1,
            "per_device_train_batch_size": 32,
            "save_strategy": "no",
            "report_to": "none",
            "disable_tqdm": True,
            "use_cpu": True,
        }
        extra: dict[str, Any] = {}
        if settings is not None:
            extra = {
                "learning_rate": settings["learning_rate"],
                "warmup_steps": settings["warmup_ratio"],
                "weight_decay": settings["weight_decay"],
                "bf16": False,
                "seed": SEED,
                "data_seed": SEED,
                "batch_sampler": BatchSamplers.NO_DUPLICATES,
            }
        args = SentenceTransformerTrainingArguments(**common, **extra)
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=data, loss=MultipleNegativesRankingLoss(model)
        )
        trainer.train()
        model.save(str(out / "model"))
        step = time.perf_counter() - started
        fit = train_runtime(trainer.state.log_history) or float("nan")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {
        "fit_s": fit,
        "train_step_s": step,
        "fit_pairs_per_s": len(anchors) / fit,
        "step_pairs_per_s": len(anchors) / step,
    }


def prepare(args: argparse.Namespace) -> tuple[dict[str, Any], Path, Any]:
    """Run one job per setting through a live server; keep its snapshot for the runs."""
    data = banking77(train_per_intent=args.per_intent)
    keep = Path(tempfile.mkdtemp(prefix="fineloop-tp-snapshot-"))
    jobs: dict[str, Any] = {}
    with running_server() as server, Client(server.url, timeout=600) as client:
        create_project(client, "bank", data.items, base_model=minilm_path())
        events = [{"kind": "label", "input": q, "items": [intent]} for q, intent in data.train]
        client.send_feedback_batch("bank", events)
        for name, overrides in (("identical", IDENTICAL), ("defaults", DEFAULTS)):
            print(f"job with the {name} settings ...", flush=True)
            job = run_job(client, "bank", 3600, **overrides)
            jobs[name] = job["timing"] | {"version": job["version"]}
            uri = Path(client.snapshot("bank", job["snapshot_id"])["uri"])
        snapshot = keep / "snapshot"
        shutil.copytree(uri, snapshot)
    from datasets import load_from_disk  # type: ignore[import-untyped]

    train = load_from_disk(str(snapshot / "pairs"))["train"]
    return jobs, snapshot, train


def main() -> None:
    args = parse_args()
    machine = machine_facts()
    jobs, snapshot, train = prepare(args)
    anchors, positives = list(train["anchor"]), list(train["positive"])
    rows = len(anchors)
    runs: dict[str, dict[str, list[dict[str, float]]]] = {
        "identical": {"fineloop": [], "plain": []},
        "defaults": {"fineloop": [], "plain": []},
    }
    try:
        for repeat in range(args.repeats):
            for setting, overrides, bare in (
                ("identical", IDENTICAL, IDENTICAL),
                ("defaults", DEFAULTS, None),
            ):
                order = ("fineloop", "plain") if repeat % 2 == 0 else ("plain", "fineloop")
                for side in order:
                    result = (
                        fineloop_run(snapshot, overrides, rows)
                        if side == "fineloop"
                        else bare_run(anchors, positives, bare)
                    )
                    runs[setting][side].append(result)
                    print(
                        f"repeat {repeat} {setting:9s} {side:8s} fit {result['fit_s']:.1f}s "
                        f"({result['fit_pairs_per_s']:.1f} pairs/s), "
                        f"step {result['train_step_s']:.1f}s",
                        flush=True,
                    )
    finally:
        shutil.rmtree(snapshot.parent, ignore_errors=True)
    report(args, machine, jobs, runs, rows)


def medians(results: list[dict[str, float]]) -> dict[str, float]:
    return {key: median([r[key] for r in results]) for key in results[0]}


def report(
    args: argparse.Namespace,
    machine: dict[str, Any],
    jobs: dict[str, Any],
    runs: dict[str, dict[str, list[dict[str, float]]]],
    rows: int,
) -> None:
    cases, table = [], []
    for setting in ("identical", "defaults"):
        fine, plain = medians(runs[setting]["fineloop"]), medians(runs[setting]["plain"])
        fit_ratio = ratio(fine["fit_pairs_per_s"], plain["fit_pairs_per_s"])
        step_ratio = ratio(fine["step_pairs_per_s"], plain["step_pairs_per_s"])
        met = {"fit_ratio_at_least_0.95": fit_ratio >= GOAL_RATIO} if setting == "identical" else {}
        job = jobs[setting]
        cases.append(
            {
                "case": setting,
                "fineloop": fine | {"job_wall_s": job["wall_s"]},
                "base": {},
                "plain": plain,
                "ratio_fit_pairs_per_s": fit_ratio,
                "ratio_step_pairs_per_s": step_ratio,
                "met": met,
                "job_timing": job,
                "runs": runs[setting],
                "settings": {
                    "fineloop": IDENTICAL if setting == "identical" else DEFAULTS,
                    "plain": IDENTICAL
                    if setting == "identical"
                    else "SentenceTransformerTrainingArguments defaults, batch 32, 1 epoch",
                },
            }
        )
        goal = f">= {GOAL_RATIO}" if setting == "identical" else ""
        verdict = (
            ""
            if not met
            else ("[green]yes[/green]" if fit_ratio >= GOAL_RATIO else "[red]no[/red]")
        )
        table.append(
            [f"{setting}: fit pairs/s", fine["fit_pairs_per_s"], plain["fit_pairs_per_s"],
             fit_ratio, goal, verdict]
        )  # fmt: skip
        table.append(
            [f"{setting}: train step pairs/s", fine["step_pairs_per_s"],
             plain["step_pairs_per_s"], step_ratio, "", ""]
        )  # fmt: skip
        table.append(
            [f"{setting}: job wall s (plain: its run)", job["wall_s"], plain["train_step_s"],
             ratio(job["wall_s"], plain["train_step_s"]), "", ""]
        )  # fmt: skip
    print_table(
        f"Training throughput, banking77 {args.per_intent} queries/intent: {rows} train rows, "
        f"1 epoch, batch 32; median of {args.repeats} alternating runs "
        f"(bf16 supported: {bf16_default()})",
        ["metric", "fineloop", "plain", "fineloop/plain", "goal", "met"],
        table,
    )
    path = write_results(
        "train_throughput",
        {
            "benchmark": "train_throughput",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine | {"load_average_at_end": machine_facts()["load_average"]},
            "config": vars(args)
            | {
                "train_rows": rows,
                "bf16_supported": bf16_default(),
                "timing": "fineloop: fineloop.tasks.embedding.train.train called in-process; "
                "fit = the trainer's train_runtime; whole job = API job wall time",
            },
            "cases": cases,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
