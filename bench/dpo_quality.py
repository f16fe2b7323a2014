"""DPO quality: held-out preference accuracy of SmolLM2 before and after DPO through fineloop,
against a bare TRL `DPOTrainer` on the same pairs.

Data: HH-RLHF helpful-base test pairs (`../shared/datasets/hh-rlhf`), the conversation up
to the last reply as the prompt. Pairs whose prompt plus longer reply exceed `--max-chars`
characters are skipped (CPU budget); the rest, in file order, are split by line index:
the first `--train` usable pairs are training data, the last `--test` usable pairs of the
file are held out (never imported, never trained on).

- base: the untrained model.
- fineloop: the train pairs imported as `format=chat` preference lines into a generation
  project, one training job (`fineloop.jobs.runner.execute`: build, train with method
  dpo, evaluate, gate, register). fineloop keeps ~30% of the pairs out of training for its
  own validation and test splits (the gate's evidence).
- plain: `DPOTrainer` with the same LoraConfig, epochs, batch, rate, beta, max_length and
  precision, on all the train pairs.

Preference accuracy: the share of held-out pairs whose chosen last reply has a higher
summed log-prob than the rejected one under the chat template (a tie counts one half);
intervals are 95% paired bootstraps over the held-out pairs. "shorter wins" is the
accuracy of always preferring the shorter reply on the same pairs.

    .venv/bin/python bench/dpo_quality.py --model PATH      # ~16 min on 2 shared cores
    .venv/bin/python bench/dpo_quality.py --model PATH --quick
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _child import set_threads
from _generation_common import (
    DEFAULT_MODEL,
    Pair,
    add_threads_option,
    bare_args,
    bare_lora,
    bootstrap_ci,
    chat_lines,
    hh_pairs,
    import_and_train,
    load_base,
    preference_margins,
    train_runtime,
    use_model,
    workspace,
)
from common import machine_facts, print_table, write_results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="Prepared SmolLM2 folder.")
    parser.add_argument("--train", type=int, default=64, help="Train pairs (file start).")
    parser.add_argument("--test", type=int, default=160, help="Held-out pairs (file end).")
    parser.add_argument("--max-chars", type=int, default=400, help="Prompt + longer reply.")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="24 train, 40 held-out, 1 epoch.")
    add_threads_option(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    if args.quick:
        args.train, args.test, args.epochs = 24, 40, 1
    return args


def split(args: argparse.Namespace) -> tuple[list[Pair], list[Pair]]:
    pairs = hh_pairs(args.max_chars)
    if args.train + args.test > len(pairs):
        raise SystemExit(f"only {len(pairs)} usable pairs; lower --train/--test")
    return pairs[: args.train], pairs[len(pairs) - args.test :]


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "method": "dpo",
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
    }


def run_fineloop(args: argparse.Namespace, model: str, train: list[Pair], keep: Path) -> Any:
    lines = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in train]
    with workspace() as settings:
        job = import_and_train(settings, model, chat_lines(lines), train_overrides(args))
        if job.state != "succeeded":
            raise RuntimeError(f"job {job.state}: {job.error}")
        shutil.copytree(job.artifact, keep)  # the workspace goes away
    return job


def run_plain(args: argparse.Namespace, model: str, train: list[Pair], out: Path) -> float:
    """The textbook script: DPOTrainer + LoRA on the train pairs; the trainer's runtime."""
    from datasets import Dataset  # type: ignore[import-untyped]
    from trl.trainer.dpo_config import DPOConfig
    from trl.trainer.dpo_trainer import DPOTrainer

    from fineloop.runtime import supports_bf16
    from fineloop.tasks.generation.config import GenerationTrainConfig
    from fineloop.tasks.generation.models import write_adapter_base

    config = GenerationTrainConfig.parse(train_overrides(args))
    data = Dataset.from_list(
        [
            {
                "prompt": p.prompt,
                "chosen": [{"role": "assistant", "content": p.chosen}],
                "rejected": [{"role": "assistant", "content": p.rejected}],
            }
            for p in train
        ]
    )
    base, tokenizer = load_base(model)
    trainer = DPOTrainer(
        model=base,
        args=DPOConfig(**bare_args(config, out / "run", supports_bf16()), beta=config.dpo_beta),
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=bare_lora(config),
    )
    trainer.train()
    trained: Any = trainer.model
    trained.save_pretrained(str(out / "adapter"))
    write_adapter_base(out / "adapter", model)  # so the shared scorer finds its base
    return train_runtime(trainer.state.log_history)


def interval(label: str, found: tuple[float, float, float]) -> str:
    return f"{label} {found[0]:+.3f} [{found[1]:+.3f}, {found[2]:+.3f}]".strip()


def accuracy(margins: list[float]) -> list[float]:
    return [1.0 if m > 0 else 0.5 if m == 0 else 0.0 for m in margins]


def shorter_wins(pairs: list[Pair]) -> list[float]:
    return [
        1.0 if len(p.chosen) < len(p.rejected) else 0.5 if len(p.chosen) == len(p.rejected) else 0.0
        for p in pairs
    ]


def main() -> None:
    args = parse_args()
    model = use_model(args.model)
    machine = machine_facts()
    train, test = split(args)
    print(
        f"{len(train)} train pairs (lines {train[0].line}-{train[-1].line}), {len(test)} "
        f"held-out (lines {test[0].line}-{test[-1].line})",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="dpo-quality-"))
    timings: dict[str, float] = {}
    try:
        started = time.perf_counter()
        base_acc = accuracy(preference_margins(model, test, args.max_length))
        timings["score_base_s"] = time.perf_counter() - started
        print(f"base held-out accuracy {sum(base_acc) / len(base_acc):.3f}", flush=True)

        job = run_fineloop(args, model, train, work / "fineloop")
        timings["fineloop_job_s"] = job.wall_s
        timings["fineloop_fit_s"] = float(job.training["metrics"]["dpo"]["train_runtime"])
        fine_acc = accuracy(preference_margins(str(work / "fineloop"), test, args.max_length))
        print(f"fineloop held-out accuracy {sum(fine_acc) / len(fine_acc):.3f}", flush=True)

        started = time.perf_counter()
        timings["plain_fit_s"] = run_plain(args, model, train, work / "plain")
        timings["plain_run_s"] = time.perf_counter() - started
        plain_acc = accuracy(
            preference_margins(str(work / "plain" / "adapter"), test, args.max_length)
        )
        print(f"plain held-out accuracy {sum(plain_acc) / len(plain_acc):.3f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(args, machine, train, test, base_acc, fine_acc, plain_acc, job, timings)


def report(
    args: argparse.Namespace,
    machine: dict[str, Any],
    train: list[Pair],
    test: list[Pair],
    base_acc: list[float],
    fine_acc: list[float],
    plain_acc: list[float],
    job: Any,
    timings: dict[str, float],
) -> None:
    short = shorter_wins(test)
    vs_base = bootstrap_ci([f - b for f, b in zip(fine_acc, base_acc, strict=True)])
    vs_plain = bootstrap_ci([f - p for f, p in zip(fine_acc, plain_acc, strict=True)])
    plain_vs_base = bootstrap_ci([p - b for p, b in zip(plain_acc, base_acc, strict=True)])
    mean = {
        name: sum(v) / len(v)
        for name, v in (
            ("base", base_acc),
            ("fineloop", fine_acc),
            ("plain", plain_acc),
            ("short", short),
        )
    }
    met = {
        "fineloop_above_base_ci_excludes_0": vs_base[1] > 0,
        "fineloop_at_least_plain": mean["fineloop"] >= mean["plain"],
    }
    yes = {True: "[green]yes[/green]", False: "[red]no[/red]"}
    print_table(
        f"DPO on HH-RLHF helpful-base: {len(train)} train pairs imported (fineloop trains on "
        f"its train split of them), {len(test)} held-out; prompt + longer reply <= "
        f"{args.max_chars} chars; {args.epochs} epoch(s), batch {args.batch_size}, "
        f"max_length {args.max_length}, LoRA r=16, beta 0.1",
        ["held-out preference accuracy", "value", "95% CI of the difference", "goal", "met"],
        [
            ["base (untrained)", mean["base"], "", "", ""],
            [
                "fineloop (DPO job)",
                mean["fineloop"],
                interval("vs base", vs_base),
                "> base, CI excludes 0",
                yes[met["fineloop_above_base_ci_excludes_0"]],
            ],
            [
                "plain (bare DPOTrainer)",
                mean["plain"],
                interval("vs base", plain_vs_base),
                "",
                "",
            ],
            [
                "fineloop - plain",
                mean["fineloop"] - mean["plain"],
                f"{vs_plain[0]:+.3f} [{vs_plain[1]:+.3f}, {vs_plain[2]:+.3f}]",
                ">= 0",
                yes[met["fineloop_at_least_plain"]],
            ],
            ["shorter answer wins", mean["short"], "", "", ""],
        ],
    )
    for goal, ok in met.items():
        print(f"goal {goal}: {'met' if ok else 'MISSED'}")
    train_rows = job.training.get("rows", {}).get("dpo")
    path = write_results(
        "dpo_quality",
        {
            "benchmark": "dpo_quality",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine | {"load_average_at_end": machine_facts()["load_average"]},
            "config": vars(args)
            | {
                "data": "hh-rlhf helpful-base-test.jsonl; usable pairs (last replies differ, "
                f"prompt + longer reply <= {args.max_chars} chars) in file order: the first "
                f"{len(train)} train (lines {train[0].line}-{train[-1].line}), the last "
                f"{len(test)} held out (lines {test[0].line}-{test[-1].line})",
                "fineloop_train_rows": train_rows,
                "plain_train_rows": len(train),
                "scoring": "summed log-prob of the final assistant turn under the chat "
                "template, chosen vs rejected; tie = 0.5; adapters merged, fp32",
            },
            "cases": [
                {
                    "case": "hh-rlhf-helpful-base",
                    "base": {"preference_accuracy": mean["base"]},
                    "fineloop": {
                        "preference_accuracy": mean["fineloop"],
                        "gate_passed": bool(job.gate.get("passed")),
                        "job_metrics_candidate": job.metrics.get("candidate", {}),
                        "job_metrics_base": job.metrics.get("base", {}),
                    },
                    "plain": {"preference_accuracy": mean["plain"]},
                    "shorter_wins": {"preference_accuracy": mean["short"]},
                    "fineloop_minus_base": dict(zip(("mean", "low", "high"), vs_base, strict=True)),
                    "fineloop_minus_plain": dict(
                        zip(("mean", "low", "high"), vs_plain, strict=True)
                    ),
                    "plain_minus_base": dict(
                        zip(("mean", "low", "high"), plain_vs_base, strict=True)
                    ),
                    "met": met,
                    "timings_s": timings,
                }
            ],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
