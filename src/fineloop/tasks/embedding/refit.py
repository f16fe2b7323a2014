"""Refit an embedding model on train + validation, as far as its candidate kept training.

The candidate's `fineloop.json` holds its trainer state: the step early stopping kept as
best, out of how many the run's schedule had (and the evaluation log, which says at which
epoch that was). The refit is the candidate's run again, on more data: from the same
starting model, with the same config (epochs, learning-rate schedule), on a copy of the
snapshot whose train split is train + validation (test stays: its positives are never
drawn as random negatives, as in the first run), stopped at the same share of its schedule
— the end of epoch 2 of 3 if that is where the candidate's best checkpoint was. A
`max_steps` cap grows with the train split (and with the number of processes the
candidate trained on), so the refit makes the same passes over the data. There is no
validation left, so no early stopping; it trains in the precision the candidate was kept
in, and with the batch size (and loss) `batch_size: auto` chose for it.

It runs in the job's own process (one process even when the candidate trained on several).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from datasets import DatasetDict, concatenate_datasets  # type: ignore[import-untyped]
from pydantic import BaseModel
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from fineloop.data.snapshot_io import META, write_meta
from fineloop.tasks.base import ProgressSink, Refitted
from fineloop.tasks.embedding.evaluate import PRIMARY, read_pairs, snapshot_info
from fineloop.tasks.embedding.train import VALIDATION, as_config, train

STAMP = "fineloop.json"


class StopAtShare(TrainerCallback):
    """Ends training once `share` of the run's scheduled steps are done."""

    def __init__(self, share: float) -> None:
        self.share = share

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.global_step >= max(1, round(self.share * state.max_steps)):
            control.should_training_stop = True


def refit(
    snapshot: Path,
    base_model: str,
    config: BaseModel,
    trained: Path,
    out_dir: Path,
    sink: ProgressSink,
) -> Refitted | None:
    """Train `base_model` on train + validation as far into the schedule as the candidate
    at `trained` kept; None (logged) when that run kept no best step or there is no
    validation split."""
    settings = as_config(config)
    stamp_file = Path(trained) / STAMP
    stamp: dict[str, Any] = json.loads(stamp_file.read_text()) if stamp_file.is_file() else {}
    trainer = stamp.get("trainer") or {}
    pairs = read_pairs(snapshot)
    added = len(pairs[VALIDATION]) if VALIDATION in pairs else 0
    kept = kept_share(trainer)
    if added == 0 or kept is None:
        why = "no validation split to add" if added == 0 else "no best checkpoint recorded"
        sink.log(f"refit: not possible, the candidate's run has {why}")
        return None
    merged = concatenate_datasets([pairs["train"], pairs[VALIDATION]])
    changes: dict[str, Any] = {
        "early_stopping_patience": None,
        "precision": stamp.get("precision") or settings.precision,
        **chosen_batch(stamp.get("batch") or {}),
    }
    if settings.max_steps:  # the same passes over a split that grew, on one process
        world = int(trainer.get("world_size") or 1)
        grown = len(merged) / len(pairs["train"])
        changes["max_steps"] = max(1, round(settings.max_steps * world * grown))
    sink.log(
        f"refit: {len(merged)} examples (train {len(pairs['train'])} + validation {added}), "
        f"stopping at {kept['share']:.0%} of the schedule as the candidate's best checkpoint did"
    )
    data = Path(out_dir).with_name(Path(out_dir).name + "-data")
    try:
        write_merged(snapshot, data, DatasetDict({"train": merged, "test": pairs["test"]}))
        folder = train(
            data,
            base_model,
            settings.model_copy(update=changes),
            out_dir,
            sink,
            extra_callbacks=[StopAtShare(kept["share"])],
        )
    finally:
        shutil.rmtree(data, ignore_errors=True)
    stamp_out = folder / STAMP
    info = json.loads(stamp_out.read_text())
    ran = info.get("trainer") or {}
    summary: dict[str, Any] = {
        **kept,
        "epochs": _number(_last_epoch(ran.get("log_history") or [])),
        "steps": ran.get("global_step"),
        "of_steps": ran.get("max_steps"),
        **{k: v for k, v in changes.items() if k != "early_stopping_patience"},
        "train_examples": len(merged),
        "validation_examples": added,
        f"candidate_validation_{PRIMARY}": (stamp.get("validation") or {}).get(PRIMARY),
    }
    stamp_out.write_text(json.dumps(info | {"refit": summary}, indent=2, sort_keys=True))
    return Refitted(folder, summary)


def kept_share(trainer: dict[str, Any]) -> dict[str, Any] | None:
    """Where the candidate's best checkpoint was: {"best_step", "best_epoch", "share" (of
    the steps its schedule had)}; None when the trainer state names no best step."""
    best_step, total = trainer.get("best_step"), trainer.get("max_steps")
    if not isinstance(best_step, int) or best_step < 1 or not isinstance(total, int) or total < 1:
        return None
    history = trainer.get("log_history") or []
    epoch = next(
        (
            float(entry["epoch"])
            for entry in history
            if entry.get("step") == best_step
            and "epoch" in entry
            and any(str(key).startswith("eval_") for key in entry)
        ),
        None,
    )
    return {"best_step": best_step, "best_epoch": epoch, "share": min(1.0, best_step / total)}


def chosen_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch size (and loss) `batch_size: auto` chose for the candidate, from its stamp:
    the refit trains with the same, rather than probing memory again; {} when it was given."""
    if batch.get("requested") != "auto" or not isinstance(batch.get("batch_size"), int):
        return {}
    chosen = {"batch_size": batch["batch_size"], "loss": batch.get("loss")}
    if batch.get("cached_mini_batch_size"):
        chosen["cached_mini_batch_size"] = batch["cached_mini_batch_size"]
    return {key: value for key, value in chosen.items() if value is not None}


def write_merged(snapshot: Path, out: Path, pairs: DatasetDict) -> None:
    """A copy of `snapshot` with other pairs: everything else linked (the corpus), the same
    snapshot.json (so the model's stamp names the real snapshot), marked as a refit's."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    pairs.save_to_disk(str(out / "pairs"))
    for entry in Path(snapshot).iterdir():
        if entry.name not in ("pairs", META):
            (out / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    write_meta(out, snapshot_info(snapshot) | {"refit_of": str(snapshot)})


def _last_epoch(history: list[dict[str, Any]]) -> float | None:
    epochs = [float(entry["epoch"]) for entry in history if "epoch" in entry]
    return max(epochs) if epochs else None


def _number(value: float | None) -> float | int | None:
    """2.0 -> 2, 1.4999 -> 1.5: an epoch count as people read it."""
    if value is None:
        return None
    return int(value) if value.is_integer() else round(value, 2)
