"""NER quality and training speed on WNUT-17 (emerging and rare entities in tweets, six
types), fineloop against the bare transformers script it wraps and the untrained model.

Data: `wnut17/` under FINELOOP_BENCH_DATASETS (else FINELOOP_TEST_DATASETS, else
`../shared/datasets`), as published: train = wnut17train.conll, validation =
emerging.dev.conll, test = emerging.test.annotated. Base: the BERT of the packaged
all-MiniLM-L6-v2 with a fresh token-classification head.

Case "wnut17" (each training is its own child process, so its peak RSS is its own):
- fineloop: the published files go through fineloop's `conll` import converter (label
  events) and the NER builder's row mapping (`build.harvest`: one row per distinct text)
  into a snapshot in the builder's format, keeping the published splits (the builder's
  own split is a seeded hash of the document); then `NerTask.train` with a
  `NerTrainConfig` (validation F1 each epoch, best epoch kept, class weights by its
  default power 0.5) and the model scored on the test sentences. `fineloop_unweighted`
  is the same with `class_weight_power=0` (the plain recipe's loss).
- plain (`ner_plain.py`): AutoModelForTokenClassification + Trainer +
  DataCollatorForTokenClassification, first-subword labelling, no evaluation, no class
  weights; the same distinct train sentences, base, learning rate, batch size, epochs,
  max_length, warmup, weight decay, precision and seed.
- base: the fresh-head model, scored the same way.
Every model is scored by one scorer (`_ner_common`): entity-level seqeval on the 1,287
published test sentences. `fineloop_own_evaluate` is `NerTask.evaluate` on the snapshot's
test split (1,280 distinct texts). Speed: train examples/s = train texts x epochs run /
the trainer's own `train_runtime` (fineloop's includes its per-epoch validation; the
`_no_validation` figure subtracts it).

Case "feedback": one turn of the loop on a live server (see `_ner_loop.py`): 10% model,
reviewed extractions of 20% sent as edit corrections, online adaptation measured on the
next 20%, retrain; plain continues the 10% model on the gold spans.

Defaults: 1,000 train sentences, 2 epochs, lr 1e-4, batch 16, max_length 128; the
feedback case slices the first 1,500. `--full`: all 3,291 distinct train sentences and
3 epochs in both cases.

    .venv/bin/python bench/ner_quality.py                  # ~25 min on 2 busy cores
    .venv/bin/python bench/ner_quality.py --no-unweighted  # ~19 min: the committed run
    .venv/bin/python bench/ner_quality.py --full           # ~45 min for the wnut17 case alone
    .venv/bin/python bench/ner_quality.py --quick          # a smoke run, ~4 min
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _child import peak_rss_mb, print_result, run_child, set_threads
from _ner_common import (
    SEED,
    WNUT_TYPES,
    Sentence,
    bootstrap_f1_difference,
    distinct,
    load_sentences,
    minilm_path,
    predict_tags,
    published_snapshot,
    save_sentences,
    score,
    wnut17,
)
from common import comparison_row, machine_facts, print_table, ratio, write_results

GOAL_F1 = 1.0  # fineloop / plain entity F1
GOAL_SPEED = 0.95  # fineloop / plain train examples/s


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["wnut17", "feedback"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument(
        "--train-limit", type=int, default=1000, help="wnut17 case: the first N train sentences."
    )
    parser.add_argument("--test-limit", type=int, help="Score the first N test sentences.")
    parser.add_argument(
        "--loop-limit", type=int, default=1500, help="Feedback case: slice the first N."
    )
    parser.add_argument(
        "--full", action="store_true", help="All train sentences in both cases, 3 epochs."
    )
    parser.add_argument("--no-unweighted", action="store_true", help="Skip fineloop w/o weights.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process.")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="600 train, 300 validation and test sentences, 1 epoch.",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_threads(args.threads)
    if args.full:
        args.train_limit, args.loop_limit, args.epochs = None, None, 3
    if args.quick:
        args.train_limit, args.loop_limit, args.test_limit, args.epochs = 600, 600, 300, 1
    return args


def overrides(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    return {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "max_length": args.max_length,
        "seed": SEED,
    } | extra


def plain_spec(args: argparse.Namespace) -> dict[str, Any]:
    """What ner_plain.py needs besides its data: fineloop's values for the same run."""
    from fineloop.runtime import supports_bf16
    from fineloop.tasks.ner.config import NerTrainConfig
    from fineloop.tasks.ner.options import NerOptions

    config = NerTrainConfig.parse(overrides(args))
    return {
        "threads": args.threads,
        "tags": NerOptions(entity_types=WNUT_TYPES).tags(),
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "max_length": config.max_length,
        "weight_decay": config.weight_decay,
        "warmup_ratio": config.warmup_ratio,
        "bf16": supports_bf16() if config.bf16 == "auto" else config.bf16,
        "seed": config.seed,
    }


# --- the fineloop child ------------------------------------------------------------------


def child(spec_path: str) -> None:
    """Snapshot, `NerTask.train`, `NerTask.evaluate`, test tags: one fineloop run."""
    from fineloop.tasks.base import NullSink
    from fineloop.tasks.ner import train as ner_train
    from fineloop.tasks.ner.config import NerTrainConfig
    from fineloop.tasks.ner.task import NerTask

    spec = json.loads(Path(spec_path).read_text())
    work = Path(spec["work"])
    splits = {name: load_sentences(Path(spec[name])) for name in ("train", "validation", "test")}
    started = time.perf_counter()
    sizes = published_snapshot(work / "snapshot", splits)
    snapshot_s = time.perf_counter() - started
    trainers: list[Any] = []
    make_trainer = ner_train.make_trainer

    def keep(*a: Any, **k: Any) -> Any:  # the job's own trainer, to read its state after
        trainers.append(make_trainer(*a, **k))
        return trainers[-1]

    ner_train.make_trainer = keep  # type: ignore[assignment]
    task = NerTask()
    config = NerTrainConfig.parse(spec["overrides"])
    started = time.perf_counter()
    model = task.train(work / "snapshot", spec["base"], config, work / "model", NullSink())
    train_s = time.perf_counter() - started
    rss_train = peak_rss_mb()
    state = trainers[-1].state
    fit = next(e["train_runtime"] for e in reversed(state.log_history) if "train_runtime" in e)
    validation_s = sum(e.get("eval_runtime", 0.0) for e in state.log_history)
    own = task.evaluate(str(model), work / "snapshot", "test")
    record = json.loads((Path(model) / ner_train.RECORD).read_text())
    print_result(
        {
            "tags": predict_tags(str(model), splits["test"]),
            "snapshot": sizes,
            "snapshot_s": snapshot_s,
            "train_s": train_s,
            "fit_s": fit,
            "validation_s": validation_s,
            "epochs_run": state.epoch,
            "steps": state.global_step,
            "rows": sizes["train"],
            "best_f1_validation": record.get("best_f1"),
            "evaluations": record.get("evaluations"),
            "own_evaluate": own.metrics,
            "peak_rss_train_mb": rss_train,
            "peak_rss_mb": peak_rss_mb(),
        }
    )


def base_tags(work: Path, test: list[Sentence]) -> list[list[str]]:
    """The untrained model: the base with a fresh head (seeded like fineloop's), saved as
    a NER folder and read through NerPredictor."""
    from transformers import AutoTokenizer, set_seed

    from fineloop.tasks.ner.options import NerOptions
    from fineloop.tasks.ner.train_model import load_model

    set_seed(SEED)
    model, _ = load_model(minilm_path(), NerOptions(entity_types=WNUT_TYPES).tags(), print)
    model.save_pretrained(str(work / "base"))
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(str(work / "base"))
    return predict_tags(str(work / "base"), test)


# --- case "wnut17" ------------------------------------------------------------------------


def wnut_case(args: argparse.Namespace, data: dict[str, list[Sentence]]) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ner-quality-"))
    try:
        for name, sentences in data.items():
            save_sentences(work / f"{name}.json", sentences)
        test = data["test"]
        scored: dict[str, dict[str, Any]] = {"base": score(test, base_tags(work, test))}
        runs: dict[str, dict[str, Any]] = {}
        sides = [("fineloop", {}), ("plain", None)]
        if not args.no_unweighted:
            sides.append(("fineloop_unweighted", {"class_weight_power": 0.0}))
        for side, extra in sides:
            print(f"[wnut17] {side} ...", flush=True)
            folder = work / side
            folder.mkdir()
            if extra is None:
                spec = plain_spec(args) | {"base": minilm_path(), "work": str(folder)}
                spec |= {"train": str(work / "train.json"), "test": str(work / "test.json")}
                path = folder / "spec.json"
                path.write_text(json.dumps(spec))
                runs[side] = run_child("ner_plain.py", [str(path)], timeout=3600)
            else:
                spec = {name: str(work / f"{name}.json") for name in data}
                spec |= {"base": minilm_path(), "work": str(folder)}
                spec |= {"overrides": overrides(args, **extra)}
                path = folder / "spec.json"
                path.write_text(json.dumps(spec))
                runs[side] = run_child("ner_quality.py", ["--child", str(path)], timeout=3600)
            scored[side] = score(test, runs[side].pop("tags"))
            print(f"[wnut17] {side}: test f1 {scored[side]['metrics']['f1']:.4f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return wnut_entry(data, scored, runs)


def speed(run: dict[str, Any]) -> dict[str, float]:
    epochs = float(run.get("epochs_run") or run.get("epochs") or 0)
    examples = run["rows"] * epochs
    found = {
        "train_s": run["train_s"],
        "fit_s": run["fit_s"],
        "train_examples_per_s": examples / run["fit_s"],
        "peak_rss_mb": run["peak_rss_train_mb"],
    }
    if "validation_s" in run:
        no_validation = run["fit_s"] - run["validation_s"]
        found["train_examples_per_s_no_validation"] = examples / no_validation
    return found


def wnut_entry(
    data: dict[str, list[Sentence]], scored: dict[str, Any], runs: dict[str, Any]
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "case": f"wnut17 (train {len(data['train'])} distinct sentences, validation "
        f"{len(data['validation'])}, test {len(data['test'])} as published)",
        "base": scored["base"]["metrics"],
    }
    for side, run in runs.items():
        entry[side] = scored[side]["metrics"] | speed(run)
        if "own_evaluate" in run:
            entry[side] |= {"own_evaluate_f1": run["own_evaluate"].get("f1")}
            entry[side] |= {"best_validation_f1": run["best_f1_validation"]}
    entry["ratios"] = {
        "f1": ratio(entry["fineloop"]["f1"], entry["plain"]["f1"]),
        "train_examples_per_s": ratio(
            entry["fineloop"]["train_examples_per_s"], entry["plain"]["train_examples_per_s"]
        ),
        "peak_rss_mb": ratio(entry["fineloop"]["peak_rss_mb"], entry["plain"]["peak_rss_mb"]),
    }
    entry["differences"] = {
        f"{side}_minus_plain_f1": bootstrap_f1_difference(
            scored[side]["counts"], scored["plain"]["counts"]
        )
        for side in runs
        if side != "plain"
    }
    entry["per_type_f1"] = {side: found["per_type_f1"] for side, found in scored.items()}
    entry["runs"] = {
        side: {k: v for k, v in run.items() if k not in ("tags",)} for side, run in runs.items()
    }
    return entry


# --- report -------------------------------------------------------------------------------


def report(args: argparse.Namespace, machine: dict[str, Any], cases: list[dict[str, Any]]) -> None:
    met: dict[str, bool] = {}
    for case in cases:
        if case["case"].startswith("wnut17"):
            f, p = case["fineloop"], case["plain"]
            met["f1_ratio"] = case["ratios"]["f1"] >= GOAL_F1
            met["speed_ratio"] = case["ratios"]["train_examples_per_s"] >= GOAL_SPEED
            rows = [
                comparison_row(
                    "test entity F1", f["f1"], p["f1"], f">= {GOAL_F1}", met["f1_ratio"]
                ),
                comparison_row("test precision", f["precision"], p["precision"]),
                comparison_row("test recall", f["recall"], p["recall"]),
                comparison_row(
                    "train examples/s",
                    f["train_examples_per_s"],
                    p["train_examples_per_s"],
                    f">= {GOAL_SPEED}",
                    met["speed_ratio"],
                ),
                comparison_row(
                    "  (fineloop without its validation passes)",
                    f["train_examples_per_s_no_validation"],
                    p["train_examples_per_s"],
                ),
                comparison_row("train step s (load, fit, save)", f["train_s"], p["train_s"]),
                comparison_row("peak RSS MB (training)", f["peak_rss_mb"], p["peak_rss_mb"]),
            ]
            if "fineloop_unweighted" in case:
                u = case["fineloop_unweighted"]
                rows.append(comparison_row("test F1, fineloop unweighted", u["f1"], p["f1"]))
            rows.append(["test F1, base (fresh head)", case["base"]["f1"], None, None, "", ""])
            print_table(
                f"WNUT-17: {case['case']}; {args.epochs} epochs, batch {args.batch_size}, "
                f"lr {args.learning_rate}, max_length {args.max_length}, MiniLM-L6",
                ["metric", "fineloop", "plain", "fineloop/plain", "goal", "met"],
                rows,
            )
        else:
            d = case["differences"]
            met["retrain_above_10pct_model"] = d["fineloop_minus_base_f1_test"]["low"] > 0
            met["memory_above_model_later"] = d["memory_minus_model_f1_later"]["mean"] > 0
            memory = case["fineloop_memory"]
            rows = [
                ["test F1, retrained", case["base"]["f1"], case["fineloop"]["f1"],
                 case["plain"]["f1"], _ci(d["fineloop_minus_base_f1_test"])],
                ["test F1, v1 + gazetteer", case["base"]["f1"], memory["test"]["f1"], None,
                 _ci(d["memory_minus_model_f1_test"])],
                ["next-20% F1, v1 + gazetteer", case["base_later"]["f1"],
                 memory["later"]["f1"], None, _ci(d["memory_minus_model_f1_later"])],
            ]  # fmt: skip
            print_table(
                f"Feedback simulation: {case['case']}",
                ["metric", "v1 (10% model)", "fineloop", "plain", "fineloop - v1, 95% CI"],
                rows,
            )
    for goal, ok in met.items():
        print(f"goal {goal}: {'met' if ok else 'MISSED'}")
    path = write_results(
        "ner_quality",
        {
            "benchmark": "ner_quality",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine | {"load_average_at_end": machine_facts()["load_average"]},
            "config": {k: v for k, v in vars(args).items() if k != "child"}
            | {"base_model": "all-MiniLM-L6-v2 (packaged), fresh head", "seed": SEED},
            "met": met,
            "cases": cases,
        },
    )
    print(f"wrote {path}")


def _ci(d: dict[str, float]) -> str:
    return f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def main() -> None:
    args = parse_args()
    if args.child:
        child(args.child)
        return
    machine = machine_facts()
    published = wnut17()
    train = distinct(published["train"])[: args.train_limit]
    data = {"train": train, "validation": distinct(published["validation"])[: args.test_limit]}
    data["test"] = published["test"][: args.test_limit]
    cases = []
    if "wnut17" in args.cases:
        cases.append(wnut_case(args, data))
    if "feedback" in args.cases:
        from _ner_loop import feedback_case

        spec = plain_spec(args)
        loop_train = distinct(published["train"])[: args.loop_limit]
        try:
            cases.append(feedback_case(loop_train, data["test"], overrides(args), spec))
        except Exception as error:  # keep the other case's results; say what failed
            print(f"[feedback] failed: {error!r}", flush=True)
            failed = {"case": "feedback simulation", "error": repr(error)[:2000]}
            report(args, machine, cases)
            raise SystemExit(f"feedback case failed: {failed['error']}") from error
    report(args, machine, cases)


if __name__ == "__main__":
    sys.exit(main())
