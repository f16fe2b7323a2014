"""SFT throughput: a whole fineloop training job against a bare TRL `SFTTrainer` run.

Data: the first `--tasks` Self-Instruct seed tasks imported as chat lines (prompt /
completion) into a generation project on a temporary SQLite store. A fineloop job
(`fineloop.jobs.runner.execute`, as the contract tests run it) builds the snapshot, trains
a LoRA adapter with method sft, evaluates base and candidate on the test split and
registers the version. The bare side is the textbook script: `SFTTrainer` with the same
LoraConfig, TrainingArguments values (epochs, batch, rate, max_length, precision, seed)
and the very rows of the job's sft train split.

Each run is its own child process, so each peak RSS is that run's alone; the two sides
alternate for `--rounds` rounds and medians are reported. Tokens/s = the train rows'
tokens (chat template, cut at max_length) x epochs / the trainer's own `train_runtime`.
The whole job's wall time is compared with the bare run's wall time (load, fit, save).

    .venv/bin/python bench/sft_throughput.py --model PATH   # ~12 min on 2 shared cores
    .venv/bin/python bench/sft_throughput.py --model PATH --quick
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _child import peak_rss_mb, print_result, run_child, set_threads
from _generation_common import (
    DEFAULT_MODEL,
    add_threads_option,
    bare_args,
    bare_lora,
    chat_lines,
    import_and_train,
    load_base,
    seed_tasks,
    snapshot_folder,
    train_runtime,
    use_model,
    workspace,
)
from common import comparison_row, machine_facts, median, print_table, ratio, write_results

GOAL_TOKENS = 0.95  # fineloop tokens/s over bare
GOAL_WALL = 1.3  # fineloop whole job over the bare run
GOAL_MEMORY = 1.1  # fineloop peak RSS over bare


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="Prepared SmolLM2 folder.")
    parser.add_argument("--tasks", type=int, default=40, help="Seed tasks imported.")
    parser.add_argument("--rounds", type=int, default=3, help="Runs per side.")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="16 tasks, 1 round.")
    parser.add_argument("--child", choices=["job", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    add_threads_option(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    if args.quick:
        args.tasks, args.rounds = 16, 1
    return args


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "method": "sft",
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
    }


def child_job(args: argparse.Namespace, model: str) -> dict[str, Any]:
    """One fineloop job. Three of its functions are wrapped only to time them and read the
    peak RSS: the train step (peak before and after it), evaluation, and the greedy
    generation inside evaluation."""
    import fineloop.tasks.generation.evaluate as evaluate_module
    import fineloop.tasks.generation.train as train_module

    seen: dict[str, float] = {"evaluate_s": 0.0, "generate_s": 0.0}

    def timed_train(*a: Any, **k: Any) -> Path:
        seen["peak_before_train_mb"] = peak_rss_mb()
        seen["train_started"] = time.perf_counter()
        out: Path = real_train(*a, **k)
        seen["train_s"] = time.perf_counter() - seen["train_started"]
        seen["peak_after_train_mb"] = peak_rss_mb()
        return out

    def timed(name: str, function: Any) -> Any:
        def run(*a: Any, **k: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*a, **k)
            finally:
                seen[name] += time.perf_counter() - started

        return run

    real_train = train_module.train
    train_module.train = timed_train
    evaluate_module.evaluate = timed("evaluate_s", evaluate_module.evaluate)
    evaluate_module.__dict__["generate"] = timed("generate_s", evaluate_module.__dict__["generate"])
    rows = [{"prompt": t.question, "completion": t.answer} for t in seed_tasks()[: args.tasks]]
    with workspace() as settings:
        job = import_and_train(settings, model, chat_lines(rows), train_overrides(args))
        if job.state != "succeeded":
            raise RuntimeError(f"job {job.state}: {job.error}")
        fit = float(job.training["metrics"]["sft"]["train_runtime"])
        train_rows = save_rows(snapshot_folder(settings, job.snapshot), args.rows)
        tokens = count_tokens(model, train_rows, args.max_length)
        examples = int(job.metrics.get("candidate", {}).get("completion_examples", 0))
    return {
        "wall_s": job.wall_s,
        "fit_s": fit,
        "build_s": seen["train_started"] - job.started,
        "train_step_s": seen["train_s"],
        "evaluate_s": seen["evaluate_s"],
        "generate_in_evaluate_s": seen["generate_s"],
        "register_s": job.started
        + job.wall_s
        - seen["train_started"]
        - seen["train_s"]
        - seen["evaluate_s"],
        "peak_rss_mb": peak_rss_mb(),
        "peak_before_train_mb": seen["peak_before_train_mb"],
        "peak_after_train_mb": seen["peak_after_train_mb"],
        "train_rows": len(train_rows),
        "test_completion_examples": examples,
        "tokens": tokens,
        "precision": job.training.get("precision"),
        "gate_passed": bool(job.gate.get("passed")),
    }


def save_rows(snapshot: Path, target: str | None) -> Any:
    """The job's sft train rows (prompt, completion); saved for the bare side if asked."""
    from fineloop.data.snapshot_io import load_splits

    rows = load_splits(snapshot / "sft")["train"].select_columns(["prompt", "completion"])
    if target and not Path(target).exists():
        rows.save_to_disk(target)
    return rows


def count_tokens(model: str, rows: Any, max_length: int) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    total = 0
    for prompt, completion in zip(rows["prompt"], rows["completion"], strict=True):
        ids: Any = tokenizer.apply_chat_template(prompt + completion, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids  # a BatchEncoding in v5
        total += min(len(ids), max_length)
    return total


def child_bare(args: argparse.Namespace, model: str) -> dict[str, Any]:
    """The textbook TRL script on the job's rows: load, SFTTrainer, train, save."""
    from datasets import load_from_disk  # type: ignore[import-untyped]
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    from fineloop.runtime import supports_bf16
    from fineloop.tasks.generation.config import GenerationTrainConfig

    config = GenerationTrainConfig.parse(train_overrides(args))
    out = Path(tempfile.mkdtemp(prefix="bare-sft-"))
    try:
        started = time.perf_counter()
        data = load_from_disk(args.rows)
        base, tokenizer = load_base(model)
        trainer = SFTTrainer(
            model=base,
            args=SFTConfig(**bare_args(config, out / "run", supports_bf16())),
            train_dataset=data,
            processing_class=tokenizer,
            peft_config=bare_lora(config),
        )
        trainer.train()
        trained: Any = trainer.model
        trained.save_pretrained(str(out / "adapter"))
        wall = time.perf_counter() - started
        fit = train_runtime(trainer.state.log_history)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"wall_s": wall, "fit_s": fit, "peak_rss_mb": peak_rss_mb(), "train_rows": len(data)}


def main() -> None:
    args = parse_args()
    model = use_model(args.model)
    if args.child == "job":
        print_result(child_job(args, model))
        return
    if args.child == "bare":
        print_result(child_bare(args, model))
        return
    machine = machine_facts()
    work = Path(tempfile.mkdtemp(prefix="sft-tp-"))
    rows = str(work / "rows")
    common = ["--model", model, "--tasks", str(args.tasks), "--epochs", str(args.epochs)]
    common += ["--batch-size", str(args.batch_size), "--max-length", str(args.max_length)]
    common += ["--rows", rows, "--threads", str(args.threads)]
    runs: dict[str, list[dict[str, Any]]] = {"fineloop": [], "plain": []}
    try:
        for round_ in range(args.rounds):
            order = ("fineloop", "plain") if round_ % 2 == 0 else ("plain", "fineloop")
            if round_ == 0:
                order = ("fineloop", "plain")  # the job writes the rows the bare run reads
            for side in order:
                kind = "job" if side == "fineloop" else "bare"
                result = run_child("sft_throughput.py", [*common, "--child", kind], timeout=1800)
                runs[side].append(result)
                print(
                    f"round {round_} {side:8s} wall {result['wall_s']:.1f}s fit "
                    f"{result['fit_s']:.1f}s peak {result['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(args, machine, runs)


def medians(results: list[dict[str, Any]]) -> dict[str, float]:
    keys = [k for k, v in results[0].items() if isinstance(v, int | float)]
    return {key: median([float(r[key]) for r in results]) for key in keys}


def report(
    args: argparse.Namespace, machine: dict[str, Any], runs: dict[str, list[dict[str, Any]]]
) -> None:
    fine, plain = medians(runs["fineloop"]), medians(runs["plain"])
    tokens = fine["tokens"] * args.epochs
    fine["tokens_per_s"] = tokens / fine["fit_s"]
    plain["tokens_per_s"] = tokens / plain["fit_s"]
    token_ratio = ratio(fine["tokens_per_s"], plain["tokens_per_s"])
    wall_ratio = ratio(fine["wall_s"], plain["wall_s"])
    memory_ratio = ratio(fine["peak_rss_mb"], plain["peak_rss_mb"])
    train_memory_ratio = ratio(fine["peak_after_train_mb"], plain["peak_rss_mb"])
    met = {
        "tokens_per_s_ratio_at_least_0.95": token_ratio >= GOAL_TOKENS,
        "job_wall_at_most_1.3x_bare_run": wall_ratio <= GOAL_WALL,
        "peak_rss_at_most_1.1x_bare": memory_ratio <= GOAL_MEMORY,
    }
    rows = [
        comparison_row("fit tokens/s", fine["tokens_per_s"], plain["tokens_per_s"], ">= 0.95",
                       met["tokens_per_s_ratio_at_least_0.95"]),
        comparison_row("fit s (trainer train_runtime)", fine["fit_s"], plain["fit_s"]),
        comparison_row("wall s: whole job / bare run", fine["wall_s"], plain["wall_s"], "<= 1.3",
                       met["job_wall_at_most_1.3x_bare_run"]),
        ["  job: snapshot build s", fine["build_s"], None, None, "", ""],
        comparison_row("  job: train step s / bare run", fine["train_step_s"], plain["wall_s"]),
        ["  job: evaluate base + candidate s", fine["evaluate_s"], None, None, "", ""],
        ["    of which greedy generation s", fine["generate_in_evaluate_s"], None, None, "", ""],
        comparison_row("peak RSS MB: whole job / bare run", fine["peak_rss_mb"],
                       plain["peak_rss_mb"], "<= 1.1", met["peak_rss_at_most_1.1x_bare"]),
        comparison_row("peak RSS MB: job through training", fine["peak_after_train_mb"],
                       plain["peak_rss_mb"]),
        ["peak RSS MB: job before training", fine["peak_before_train_mb"], None, None, "", ""],
    ]  # fmt: skip
    print_table(
        f"SFT throughput, SmolLM2-135M-Instruct LoRA r=16 (all-linear), {args.tasks} seed tasks "
        f"imported -> {fine['train_rows']:.0f} train rows, {fine['tokens']:.0f} tokens, "
        f"{args.epochs} epoch(s), batch {args.batch_size}, max_length {args.max_length}, "
        f"{runs['fineloop'][0]['precision']}; median of {args.rounds} alternating runs",
        ["metric", "fineloop", "plain", "fineloop/plain", "goal", "met"],
        rows,
    )
    for goal, ok in met.items():
        print(f"goal {goal}: {'met' if ok else 'MISSED'}")
    path = write_results(
        "sft_throughput",
        {
            "benchmark": "sft_throughput",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine | {"load_average_at_end": machine_facts()["load_average"]},
            "config": {k: v for k, v in vars(args).items() if k not in {"child", "rows"}}
            | {
                "data": f"self-instruct seed_tasks.jsonl, first {args.tasks} tasks "
                "(prompt/completion chat lines)",
                "lora": "r=16, alpha=32, dropout=0.05, all-linear (fineloop's defaults)",
                "timing": "fit = the trainer's train_runtime; fineloop wall = the whole job "
                "through fineloop.jobs.runner.execute (build, train, evaluate base and "
                "candidate, register); plain wall = load + fit + save; each run a child "
                "process (peak RSS its own)",
            },
            "cases": [
                {
                    "case": "self-instruct-sft",
                    "fineloop": fine,
                    "base": {},
                    "plain": plain,
                    "ratio_tokens_per_s": token_ratio,
                    "ratio_wall": wall_ratio,
                    "ratio_peak_rss": memory_ratio,
                    "ratio_peak_rss_through_training": train_memory_ratio,
                    "met": met,
                    "runs": runs,
                }
            ],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
