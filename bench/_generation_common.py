"""What the generation benchmarks share: the base model, the datasets and their splits, a
fineloop training job on a temporary SQLite store, the bare TRL settings that mirror
fineloop's, scoring of preference pairs and a paired bootstrap (child processes, whose
peak memory is their own: _child.py).

The base is SmolLM2-135M-Instruct prepared with `fineloop models prepare
smollm2-135m-instruct`; every script takes its folder as `--model` and points
FINELOOP_MODELS_ROOT at the folder's parent (base models must lie under the models root).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATASETS = Path(
    os.environ.get("FINELOOP_TEST_DATASETS")
    or Path(__file__).resolve().parents[2] / "shared" / "datasets"
)
DEFAULT_MODEL = Path(".fineloop/models/smollm2-135m-instruct")
PROJECT = "bench"
Messages = list[dict[str, str]]


def use_model(path: str | Path) -> str:
    """The prepared base folder, absolute; the models root becomes its parent."""
    folder = Path(path).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise SystemExit(
            f"no model at {folder}: run `.venv/bin/fineloop models prepare "
            "smollm2-135m-instruct` and pass the folder it prints as --model"
        )
    os.environ["FINELOOP_MODELS_ROOT"] = str(folder.parent)
    return str(folder)


def add_threads_option(parser: Any) -> None:
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per process (both sides)."
    )


# --- datasets -------------------------------------------------------------------------


def hh_turns(transcript: str) -> Messages:
    """An HH-RLHF transcript ("\\n\\nHuman: … \\n\\nAssistant: …") as chat messages."""
    messages: Messages = []
    for chunk in transcript.split("\n\nHuman: ")[1:]:
        human, *replies = chunk.split("\n\nAssistant: ")
        messages.append({"role": "user", "content": human.strip()})
        messages += [{"role": "assistant", "content": r.strip()} for r in replies]
    return messages


@dataclass(frozen=True)
class Pair:
    line: int  # 0-based line index in the file
    prompt: Messages
    chosen: str
    rejected: str


def hh_pairs(max_chars: int) -> list[Pair]:
    """HH-RLHF helpful-base test pairs, in file order: the conversation before the last
    reply, the better and the worse last reply. Lines whose conversations differ before the
    last reply, whose last replies are empty or equal, or whose prompt plus longer reply
    exceed `max_chars` characters are skipped (the length bound keeps CPU runs short)."""
    path = DATASETS / "hh-rlhf" / "helpful-base-test.jsonl"
    pairs = []
    for index, line in enumerate(path.read_text().splitlines()):
        row = json.loads(line)
        chosen, rejected = hh_turns(row["chosen"]), hh_turns(row["rejected"])
        if not chosen or chosen[:-1] != rejected[:-1] or chosen[-1]["role"] != "assistant":
            continue
        if rejected[-1]["role"] != "assistant" or chosen[-1]["role"] != "assistant":
            continue
        better, worse = chosen[-1]["content"], rejected[-1]["content"]
        if not better or not worse or better == worse:
            continue
        size = sum(len(m["content"]) for m in chosen[:-1]) + max(len(better), len(worse))
        if size > max_chars:
            continue
        pairs.append(Pair(index, chosen[:-1], better, worse))
    return pairs


@dataclass(frozen=True)
class SeedTask:
    index: int  # line index in seed_tasks.jsonl
    name: str
    question: str
    answer: str


def seed_tasks() -> list[SeedTask]:
    """The 175 Self-Instruct seed tasks: instruction (+ input) and the human-written output."""
    path = DATASETS / "self-instruct" / "seed_tasks.jsonl"
    tasks = []
    for index, line in enumerate(path.read_text().splitlines()):
        row = json.loads(line)
        instance = row["instances"][0]
        question = "\n\n".join(p for p in (row["instruction"], instance["input"]) if p.strip())
        tasks.append(SeedTask(index, row["name"], question, instance["output"].strip()))
    return tasks


def chat_lines(rows: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


# --- a fineloop job on a temporary store ----------------------------------------------


@dataclass
class JobRun:
    """A finished fineloop training job: its timings and the candidate's folder."""

    started: float  # perf_counter at the job's creation
    wall_s: float
    state: str
    error: str | None
    artifact: str
    snapshot: str
    version: int
    metrics: dict[str, Any]
    gate: dict[str, Any]
    training: dict[str, Any]  # fineloop_training.json of the adapter


@contextmanager
def workspace() -> Iterator[Any]:
    """Settings of a fresh data dir (SQLite store) under a temp folder, removed after."""
    from fineloop.config import get_settings

    with tempfile.TemporaryDirectory(prefix="fineloop-genbench-") as folder:
        yield get_settings(data_dir=Path(folder) / "data")


def import_and_train(
    settings: Any, base_model: str, data: bytes, train: dict[str, Any], bootstrap: int = 1000
) -> JobRun:
    """Create a generation project, import `data` (chat JSONL) and run one training job in
    this process through `fineloop.jobs.runner.execute`, timed from the job's creation to
    its end (snapshot build, training, evaluation of base and candidate, registration)."""
    from fineloop.jobs import store as jobs
    from fineloop.jobs.runner import execute
    from fineloop.jobs.sink import StoreSink
    from fineloop.registry.versions import list_versions
    from fineloop.schemas import ProjectCreate
    from fineloop.store import Store
    from fineloop.store.projects import create_project, get_project
    from fineloop.transfer.service import import_file

    store = Store.open(settings)
    try:
        spec = {
            "name": PROJECT,
            "task": "generation",
            "base_model": base_model,
            "training_policy": {"train": train, "bootstrap_samples": bootstrap},
        }
        with store.write() as session:
            create_project(session, ProjectCreate.model_validate(spec))
        import_file(store, PROJECT, "feedback", data, "chat")
        started = time.perf_counter()
        with store.write() as session:
            job = jobs.create_job(
                session, get_project(session, PROJECT), "train", {}, claimed_by="bench"
            )
        execute(store, settings, job.id, StoreSink(store, job.id))
        wall = time.perf_counter() - started
        with store.read() as session:
            done = jobs.get_job(session, job.id)
            project = get_project(session, PROJECT)
            last = list_versions(session, project.id)[-1]
            snapshot = done.snapshot_id or ""
            found = (done.state, done.error, last.artifact_uri, last.number)
            metrics, gate = dict(last.metrics or {}), dict(last.gate or {})
    finally:
        store.close()
    state, error, artifact, number = found
    record = Path(artifact) / "fineloop_training.json"
    training = json.loads(record.read_text()) if record.is_file() else {}
    return JobRun(started, wall, state, error, artifact, snapshot, number, metrics, gate, training)


def snapshot_folder(settings: Any, snapshot_id: str) -> Path:
    """Where the job's snapshot was published (local artifact root)."""
    from fineloop.snapshots import built_snapshot, get_snapshot
    from fineloop.store import Store
    from fineloop.store.projects import get_project

    store = Store.open(settings)
    try:
        with store.read() as session:
            row = get_snapshot(session, get_project(session, PROJECT), snapshot_id)
            return Path(built_snapshot(row, settings).path)
    finally:
        store.close()


# --- the bare TRL run ------------------------------------------------------------------


def bare_args(config: Any, output: Path, bf16: bool) -> dict[str, Any]:
    """TrainingArguments a TRL user would write for the same run as fineloop's `config`
    (a GenerationTrainConfig): same epochs, batch, rate, length, precision and seed; no
    checkpoints, no evaluation, no progress bars. Gradient checkpointing is off as fineloop's
    "auto" is on a CPU (TRL's configs default to on, which recomputes activations and made
    the bare fit ~1.4x slower here)."""
    return {
        "output_dir": str(output),
        "num_train_epochs": config.epochs,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation,
        "learning_rate": config.learning_rate,
        "max_length": config.max_length,
        "bf16": bf16,
        "use_cpu": True,
        "gradient_checkpointing": False,
        "seed": config.seed,
        "data_seed": config.seed,
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_steps": config.logging_steps,
        "report_to": "none",
        "disable_tqdm": True,
    }


def bare_lora(config: Any) -> Any:
    """The same PEFT LoraConfig fineloop builds from `config`."""
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )


def load_base(path: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model, tokenizer


def train_runtime(history: list[dict[str, Any]]) -> float:
    for entry in reversed(history):
        if "train_runtime" in entry:
            return float(entry["train_runtime"])
    return float("nan")


# --- scoring and statistics ------------------------------------------------------------


def load_scoring_model(path: str) -> tuple[Any, Any]:
    """A full model or an adapter folder (merged into its base), fp32, eval mode."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(path)
    base = path
    meta = folder / "fineloop_adapter.json"
    if meta.is_file():
        base = json.loads(meta.read_text())["base_model"]
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if (folder / "adapter_config.json").is_file():
        model = PeftModel.from_pretrained(model, path).merge_and_unload()
    loaded: Any = model
    return loaded.eval(), tokenizer


def preference_margins(path: str, pairs: Sequence[Pair], limit: int) -> list[float]:
    """Per pair: summed log-prob of the chosen last reply minus the rejected one's, under
    the chat template (the same scorer for base, fineloop and plain models)."""
    from fineloop.tasks.generation.eval_scoring import encode, reply_logprobs

    model, tokenizer = load_scoring_model(path)
    reply = [{"role": "assistant", "content": ""}]
    good = [encode(tokenizer, p.prompt, [reply[0] | {"content": p.chosen}], limit) for p in pairs]
    bad = [encode(tokenizer, p.prompt, [reply[0] | {"content": p.rejected}], limit) for p in pairs]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    chosen, rejected = reply_logprobs(model, good, pad), reply_logprobs(model, bad, pad)
    return [g[0] - b[0] for g, b in zip(chosen, rejected, strict=True)]


def bootstrap_ci(
    values: Sequence[float], samples: int = 2000, seed: int = 13
) -> tuple[float, float, float]:
    """Mean and 95% percentile-bootstrap interval of `values` (per-example differences)."""
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(samples))
    low, high = means[int(0.025 * samples)], means[int(0.975 * samples) - 1]
    return sum(values) / n, low, high
