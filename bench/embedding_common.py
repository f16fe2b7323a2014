"""What the embedding benchmarks share: the base model, simulated users, the held-out
evaluation, the bare sentence-transformers training run, and following a fineloop job.

Users are simulated through the SDK exactly as an application would drive fineloop:
search with the model that serves now, then answer — pick the right item if it is shown
and reject the others shown, or, when it is not shown at all, say which one was right (a
label event, as a "none of these, I meant ..." answer).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fineloop import Client

METRICS = ("accuracy@1", "accuracy@5", "mrr@10", "ndcg@10", "recall@10")
SEED = 13  # fineloop's default training seed: the plain run uses it too


def minilm_path() -> str:
    """The packaged all-MiniLM-L6-v2 folder (never a download)."""
    from fineloop.tasks.embedding.config import packaged_minilm_path

    return packaged_minilm_path()


def bf16_default() -> bool:
    """What fineloop's precision "auto" resolves to on this machine."""
    from fineloop.runtime import supports_bf16

    return supports_bf16()


def create_project(
    client: Client,
    name: str,
    items: dict[str, str],
    *,
    base_model: str,
    metadata: dict[str, dict[str, Any]] | None = None,
    serving_policy: dict[str, Any] | None = None,
    training_policy: dict[str, Any] | None = None,
) -> None:
    client.create_project(name, "embedding", base_model=base_model)
    changes: dict[str, Any] = {}
    if serving_policy is not None:
        changes["serving_policy"] = serving_policy
    if training_policy is not None:
        changes["training_policy"] = training_policy
    if changes:
        client.update_project(name, **changes)
    rows = [
        {"id": key, "text": text, "metadata": (metadata or {}).get(key, {})}
        for key, text in items.items()
    ]
    client.upsert_items(name, rows)


@dataclass
class Simulated:
    """What the simulated users saw and said."""

    queries: int = 0
    shown: int = 0  # the right item was in the top k
    first: int = 0  # ... at rank 1
    selections: int = 0
    labels: int = 0
    seconds: float = 0.0
    search_ms: list[float] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "right_item_shown_in_top_k": self.shown,
            "right_item_first": self.first,
            "selection_events": self.selections,
            "label_events": self.labels,
            "seconds": round(self.seconds, 1),
        }


def simulate_users(
    client: Client, project: str, pairs: Iterable[tuple[str, str]], k: int = 10
) -> Simulated:
    """One search per (query, right item); the user selects the right item when shown
    (rejecting the others shown) or labels it when it is not."""
    seen = Simulated()
    started = time.perf_counter()
    for query, right in pairs:
        before = time.perf_counter()
        found = client.search(project, query, k=k)
        seen.search_ms.append((time.perf_counter() - before) * 1000)
        shown = [hit["id"] for hit in found["items"]]
        seen.queries += 1
        if right in shown:
            seen.shown += 1
            seen.first += shown[0] == right
            others = [item for item in shown if item != right]
            client.selection(project, found["interaction_id"], [right], rejected=others)
            seen.selections += 1
        else:
            client.send_feedback(project, {"kind": "label", "input": query, "items": [right]})
            seen.labels += 1
    seen.seconds = time.perf_counter() - started
    return seen


def ir_metrics(
    model: Any, items: dict[str, str], pairs: Sequence[tuple[str, str]], name: str = "test"
) -> dict[str, float]:
    """sentence-transformers' InformationRetrievalEvaluator: each query ranks every item;
    its right item is the one relevant document. `model` is a path or a loaded model."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator,
    )

    loaded = model if isinstance(model, SentenceTransformer) else SentenceTransformer(str(model))
    queries = {f"q{i}": query for i, (query, _) in enumerate(pairs)}
    relevant = {f"q{i}": {right} for i, (_, right) in enumerate(pairs)}
    evaluator = InformationRetrievalEvaluator(
        queries=queries,
        corpus=items,
        relevant_docs=relevant,
        accuracy_at_k=[1, 5],
        precision_recall_at_k=[10],
        mrr_at_k=[10],
        ndcg_at_k=[10],
        map_at_k=[10],
        name=name,
        write_csv=False,
        show_progress_bar=False,
    )
    results = evaluator(loaded)
    prefix = f"{name}_cosine_"
    return {metric: float(results[prefix + metric]) for metric in METRICS}


def train_plain(
    base_model: str,
    anchors: Sequence[str],
    positives: Sequence[str],
    out_dir: Path,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    warmup_ratio: float,
    bf16: bool,
    seed: int = SEED,
) -> dict[str, Any]:
    """The textbook recipe: SentenceTransformerTrainer + MultipleNegativesRankingLoss on
    (anchor, positive) pairs with the no-duplicates batch sampler, nothing else (no hard
    negatives, no validation, no early stopping). Returns the saved path and timings."""
    from datasets import Dataset  # type: ignore[import-untyped]
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = SentenceTransformer(base_model)
    model.model_card_data.local_files_only = True
    data = Dataset.from_dict({"anchor": list(anchors), "positive": list(positives)})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=warmup_ratio,
        bf16=bf16,
        use_cpu=True,
        seed=seed,
        data_seed=seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=50,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=data, loss=MultipleNegativesRankingLoss(model)
    )
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    model.save(str(out_dir / "model"))
    return {
        "path": str(out_dir / "model"),
        "train_s": train_s,
        "fit_s": train_runtime(trainer.state.log_history),
        "pairs": len(data),
        "steps": trainer.state.global_step,
        "pairs_per_s": len(data) * epochs / train_s,
    }


def run_job(client: Client, project: str, timeout: float, **overrides: Any) -> dict[str, Any]:
    """Start a training job through the API and wait for it. The job comes back with
    `artifact` (the candidate's folder) and `timing`: the wall time seen by the caller, and
    its stages — build (job start to the snapshot's log line), train (snapshot to the
    artifact's `fineloop.json`, written last by the train step), fit (the trainer's own
    `train_runtime`: the optimisation loop with fineloop's per-epoch validation) and
    evaluate + register (artifact to the job's end)."""
    started = time.perf_counter()
    job = client.train(project, **overrides)
    done = client.wait(job["id"], timeout=timeout, poll=0.5)
    wall = time.perf_counter() - started
    if done["state"] != "succeeded":
        events = client.job_events(job["id"])
        tail = "\n".join(str(e.get("message")) for e in events[-15:])
        raise RuntimeError(f"job {job['id']} {done['state']}: {done.get('error')}\n{tail}")
    artifact = Path(client.version(project, done["version"])["artifact_uri"])
    done["artifact"] = str(artifact)
    done["timing"] = {"wall_s": wall} | stage_seconds(client.job_events(job["id"]), done, artifact)
    return done


def trainer_state(artifact: Path) -> dict[str, Any]:
    """The trainer summary fineloop stamps into the artifact (`fineloop.json`)."""
    info: dict[str, Any] = json.loads((artifact / "fineloop.json").read_text())
    return info


def train_runtime(log_history: list[dict[str, Any]]) -> float | None:
    """The trainer's own measure of its loop (`train_runtime` in the last log entry)."""
    for entry in reversed(log_history):
        if "train_runtime" in entry:
            return float(entry["train_runtime"])
    return None


def stage_seconds(
    events: list[dict[str, Any]], job: dict[str, Any], artifact: Path
) -> dict[str, float]:
    started = datetime.fromisoformat(job["started_at"])
    finished = datetime.fromisoformat(job["finished_at"])
    written = datetime.fromtimestamp((artifact / "fineloop.json").stat().st_mtime, tz=UTC)
    built = next(
        (
            datetime.fromisoformat(e["at"])
            for e in events
            if str(e.get("message", "")).startswith("snapshot ")
        ),
        started,
    )
    info = trainer_state(artifact)
    fit = train_runtime(info.get("trainer", {}).get("log_history", []))
    out = {
        "job_s": (finished - started).total_seconds(),
        "build_s": (built - started).total_seconds(),
        "train_stage_s": (written - built).total_seconds(),
        "evaluate_register_s": (finished - written).total_seconds(),
    }
    if fit is not None:
        out["fit_s"] = fit
    return out
