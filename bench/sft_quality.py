"""SFT quality: greedy replies to held-out Self-Instruct tasks, base against fine-tuned
through fineloop (and a bare TRL `SFTTrainer` with `--plain`), scored against the
human-written reference replies.

Data: `../shared/datasets/self-instruct/seed_tasks.jsonl` (175 tasks, one instance each),
split by task: every fifth task by line index (0, 5, 10, ...) is held out, the others are
training tasks; `--train` caps how many of those (in file order) are imported. The held-out
tasks are never imported.

- base: the untrained model.
- fineloop: the training tasks imported as `format=chat` prompt/completion lines, one job
  (`fineloop.jobs.runner.execute`: build, train with method sft, evaluate, gate, register);
  fineloop keeps ~30% of the tasks for its own validation and test splits.
- plain (`--plain`): `SFTTrainer` with the same LoraConfig and arguments on all the
  imported training tasks.

Metrics per held-out task, then averaged: ROUGE-L F1 (rouge-score) and the cosine of
all-MiniLM-L6-v2 embeddings of the reply and the reference; intervals are 95% paired
bootstraps over tasks. Replies are greedy, at most the reference's token count + 16 new
tokens (capped at `--max-new-tokens`).

    .venv/bin/python bench/sft_quality.py --model PATH        # ~15 min on 2 shared cores
    .venv/bin/python bench/sft_quality.py --model PATH --quick
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
    SeedTask,
    add_threads_option,
    bare_args,
    bare_lora,
    bootstrap_ci,
    chat_lines,
    import_and_train,
    load_base,
    load_scoring_model,
    seed_tasks,
    train_runtime,
    use_model,
    workspace,
)
from common import machine_facts, print_table, write_results

METRICS = ("rouge_l", "embedding_cosine")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="Prepared SmolLM2 folder.")
    parser.add_argument("--train", type=int, default=60, help="Training tasks imported.")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--plain", action="store_true", help="Also train a bare SFTTrainer.")
    parser.add_argument("--quick", action="store_true", help="24 train tasks, 1 epoch.")
    add_threads_option(parser)
    args = parser.parse_args()
    set_threads(args.threads)
    if args.quick:
        args.train, args.epochs = 24, 1
    return args


def split(limit: int) -> tuple[list[SeedTask], list[SeedTask]]:
    tasks = seed_tasks()
    held_out = [t for t in tasks if t.index % 5 == 0]
    train = [t for t in tasks if t.index % 5 != 0][:limit]
    return train, held_out


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "method": "sft",
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
    }


def run_fineloop(args: argparse.Namespace, model: str, train: list[SeedTask], keep: Path) -> Any:
    lines = [{"prompt": t.question, "completion": t.answer} for t in train]
    with workspace() as settings:
        job = import_and_train(settings, model, chat_lines(lines), train_overrides(args))
        if job.state != "succeeded":
            raise RuntimeError(f"job {job.state}: {job.error}")
        shutil.copytree(job.artifact, keep)
    return job


def run_plain(args: argparse.Namespace, model: str, train: list[SeedTask], out: Path) -> float:
    from datasets import Dataset  # type: ignore[import-untyped]
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    from fineloop.runtime import supports_bf16
    from fineloop.tasks.generation.config import GenerationTrainConfig
    from fineloop.tasks.generation.models import write_adapter_base

    config = GenerationTrainConfig.parse(train_overrides(args))
    data = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": t.question}],
                "completion": [{"role": "assistant", "content": t.answer}],
            }
            for t in train
        ]
    )
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
    write_adapter_base(out / "adapter", model)
    return train_runtime(trainer.state.log_history)


def replies(path: str, tasks: list[SeedTask], max_new: int) -> list[str]:
    """Greedy replies of the model (or adapter) at `path` to the held-out tasks."""
    from fineloop.tasks.generation.eval_scoring import budget, generate, prompt_text

    model, tokenizer = load_scoring_model(path)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prompts = [
        tokenizer(
            prompt_text(tokenizer, [{"role": "user", "content": t.question}]),
            add_special_tokens=False,
        )["input_ids"]
        for t in tasks
    ]
    budgets = [min(max_new, budget(tokenizer, t.answer)) for t in tasks]
    return generate(model, tokenizer, prompts, budgets, pad)


def scores(generated: list[str], tasks: list[SeedTask]) -> dict[str, list[float]]:
    from fineloop.tasks.generation.metrics import embedding_cosine, rouge_l

    references = [t.answer for t in tasks]
    return {
        "rouge_l": rouge_l(generated, references),
        "embedding_cosine": embedding_cosine(generated, references),
    }


def main() -> None:
    args = parse_args()
    model = use_model(args.model)
    machine = machine_facts()
    train, held_out = split(args.train)
    print(f"{len(train)} training tasks imported, {len(held_out)} held out", flush=True)
    work = Path(tempfile.mkdtemp(prefix="sft-quality-"))
    per: dict[str, dict[str, list[float]]] = {}
    texts: dict[str, list[str]] = {}
    timings: dict[str, float] = {}
    job: Any = None
    try:
        started = time.perf_counter()
        texts["base"] = replies(model, held_out, args.max_new_tokens)
        timings["generate_base_s"] = time.perf_counter() - started
        per["base"] = scores(texts["base"], held_out)
        print(f"base done ({timings['generate_base_s']:.0f} s)", flush=True)

        job = run_fineloop(args, model, train, work / "fineloop")
        timings["fineloop_job_s"] = job.wall_s
        timings["fineloop_fit_s"] = float(job.training["metrics"]["sft"]["train_runtime"])
        texts["fineloop"] = replies(str(work / "fineloop"), held_out, args.max_new_tokens)
        per["fineloop"] = scores(texts["fineloop"], held_out)
        print(f"fineloop done (job {job.wall_s:.0f} s)", flush=True)

        if args.plain:
            started = time.perf_counter()
            timings["plain_fit_s"] = run_plain(args, model, train, work / "plain")
            timings["plain_run_s"] = time.perf_counter() - started
            texts["plain"] = replies(str(work / "plain" / "adapter"), held_out, args.max_new_tokens)
            per["plain"] = scores(texts["plain"], held_out)
            print(f"plain done ({timings['plain_run_s']:.0f} s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(args, machine, train, held_out, per, texts, job, timings)


def report(
    args: argparse.Namespace,
    machine: dict[str, Any],
    train: list[SeedTask],
    held_out: list[SeedTask],
    per: dict[str, dict[str, list[float]]],
    texts: dict[str, list[str]],
    job: Any,
    timings: dict[str, float],
) -> None:
    mean = {side: {m: sum(v) / len(v) for m, v in found.items()} for side, found in per.items()}
    diffs: dict[str, dict[str, tuple[float, float, float]]] = {}
    for other in [s for s in ("base", "plain") if s in per]:
        diffs[f"fineloop_minus_{other}"] = {
            m: bootstrap_ci([f - o for f, o in zip(per["fineloop"][m], per[other][m], strict=True)])
            for m in METRICS
        }
    vs_base = diffs["fineloop_minus_base"]
    met = {f"fineloop_above_base_{m}_ci_excludes_0": vs_base[m][1] > 0 for m in METRICS}
    if "plain" in per:
        met |= {
            f"fineloop_at_least_plain_{m}": mean["fineloop"][m] >= mean["plain"][m] for m in METRICS
        }
    yes = {True: "[green]yes[/green]", False: "[red]no[/red]"}
    rows = []
    for m in METRICS:
        d = vs_base[m]
        rows.append(
            [
                m,
                mean["base"][m],
                mean["fineloop"][m],
                mean.get("plain", {}).get(m),
                f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]",
                yes[met[f"fineloop_above_base_{m}_ci_excludes_0"]],
            ]
        )
    print_table(
        f"SFT on Self-Instruct seed tasks: {len(train)} training tasks imported (fineloop trains "
        f"on its train split of them), {len(held_out)} held-out tasks (every fifth); "
        f"{args.epochs} epoch(s), batch {args.batch_size}, max_length {args.max_length}, "
        "LoRA r=16; greedy replies",
        [
            "metric (mean over held-out tasks)",
            "base",
            "fineloop",
            "plain",
            "fineloop - base, 95% CI",
            "CI excludes 0",
        ],
        rows,
    )
    for goal, ok in met.items():
        print(f"goal {goal}: {'met' if ok else 'MISSED'}")
    examples = [
        {"task": t.name, "reference": t.answer[:300]}
        | {side: found[i][:300] for side, found in texts.items()}
        for i, t in enumerate(held_out[:5])
    ]
    path = write_results(
        "sft_quality",
        {
            "benchmark": "sft_quality",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine | {"load_average_at_end": machine_facts()["load_average"]},
            "config": vars(args)
            | {
                "data": "self-instruct seed_tasks.jsonl: held out = tasks at line index % 5 == "
                f"0 ({len(held_out)}); train = the first {len(train)} of the others",
                "fineloop_train_rows": job.training.get("rows", {}).get("sft"),
                "plain_train_rows": len(train) if "plain" in per else None,
            },
            "cases": [
                {
                    "case": "self-instruct-seed-tasks",
                    "base": mean["base"],
                    "fineloop": mean["fineloop"]
                    | {
                        "gate_passed": bool(job.gate.get("passed")),
                        "job_metrics_candidate": job.metrics.get("candidate", {}),
                        "job_metrics_base": job.metrics.get("base", {}),
                    },
                    "plain": mean.get("plain", {}),
                    "differences": {
                        name: {
                            m: dict(zip(("mean", "low", "high"), v, strict=True))
                            for m, v in found.items()
                        }
                        for name, found in diffs.items()
                    },
                    "met": met,
                    "timings_s": timings,
                    "examples": examples,
                }
            ],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
