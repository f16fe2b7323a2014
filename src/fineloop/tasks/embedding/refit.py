"""Refit an embedding model on train + validation, as long as its candidate kept training.

The candidate's `fineloop.json` holds its trainer state: the step early stopping kept as
best, and the evaluation log that says at which epoch that was. The refit trains from the
same starting model with the same config on a copy of the snapshot whose train split is
train + validation (test stays: its positives are never drawn as random negatives, as in
the first run), for that many epochs — or, when the run evaluated every `eval_steps` or
was cut by `max_steps`, for that many steps scaled by the larger split (and by the number
of processes it trained on), so it makes the same number of passes over the data. There
is no validation left, so no early stopping; it trains in the precision the candidate was
kept in, and with the batch size (and loss) `batch_size: auto` chose for it.

It runs in the job's own process (one process even when the candidate trained on several).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from datasets import DatasetDict, concatenate_datasets  # type: ignore[import-untyped]
from pydantic import BaseModel

from fineloop.data.snapshot_io import META, write_meta
from fineloop.tasks.base import ProgressSink, Refitted
from fineloop.tasks.embedding.evaluate import PRIMARY, read_pairs, snapshot_info
from fineloop.tasks.embedding.train import VALIDATION, as_config, train

STAMP = "fineloop.json"


def refit(
    snapshot: Path,
    base_model: str,
    config: BaseModel,
    trained: Path,
    out_dir: Path,
    sink: ProgressSink,
) -> Refitted | None:
    """Train `base_model` on train + validation for the length the candidate at `trained`
    kept; None (logged) when that run kept no best checkpoint or there is no validation."""
    settings = as_config(config)
    stamp_file = Path(trained) / STAMP
    stamp: dict[str, Any] = json.loads(stamp_file.read_text()) if stamp_file.is_file() else {}
    pairs = read_pairs(snapshot)
    added = len(pairs[VALIDATION]) if VALIDATION in pairs else 0
    length = kept_length(stamp.get("trainer") or {}, settings.eval_steps, settings.max_steps)
    if added == 0 or length is None:
        why = "no validation split to add" if added == 0 else "no best checkpoint recorded"
        sink.log(f"refit: not possible, the candidate's run has {why}")
        return None
    merged = concatenate_datasets([pairs["train"], pairs[VALIDATION]])
    if "max_steps" in length:  # the same passes over a split that grew, on one process
        world = int((stamp.get("trainer") or {}).get("world_size") or 1)
        grown = len(merged) / len(pairs["train"])
        length["max_steps"] = max(1, round(length["best_step"] * world * grown))
    changes = {
        "epochs": length.get("epochs", settings.epochs),
        "max_steps": length.get("max_steps"),
        "early_stopping_patience": None,
        "precision": stamp.get("precision") or settings.precision,
        **chosen_batch(stamp.get("batch") or {}),
    }
    summary: dict[str, Any] = {
        **length,
        **{k: v for k, v in changes.items() if k != "early_stopping_patience"},
        "train_examples": len(merged),
        "validation_examples": added,
        f"candidate_validation_{PRIMARY}": (stamp.get("validation") or {}).get(PRIMARY),
    }
    sink.log(
        f"refit: {len(merged)} examples (train {len(pairs['train'])} + validation {added}), "
        + (
            f"{changes['max_steps']} steps"
            if changes["max_steps"]
            else f"{changes['epochs']} epochs"
        )
    )
    data = Path(out_dir).with_name(Path(out_dir).name + "-data")
    try:
        write_merged(snapshot, data, DatasetDict({"train": merged, "test": pairs["test"]}))
        folder = train(data, base_model, settings.model_copy(update=changes), out_dir, sink)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    stamp_out = folder / STAMP
    info = json.loads(stamp_out.read_text())
    stamp_out.write_text(json.dumps(info | {"refit": summary}, indent=2, sort_keys=True))
    return Refitted(folder, summary)


def kept_length(
    trainer: dict[str, Any], eval_steps: int | None, max_steps: int | None
) -> dict[str, Any] | None:
    """How long the candidate trained until the checkpoint it kept: {"best_step",
    "best_epoch", and "epochs" (evaluated per epoch) or "max_steps" (by steps; the caller
    scales it)}; None when the trainer state names no best step."""
    best_step = trainer.get("best_step")
    if not isinstance(best_step, int) or best_step < 1:
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
    found: dict[str, Any] = {"best_step": best_step, "best_epoch": epoch}
    if eval_steps is None and max_steps is None and epoch is not None:
        return found | {"epochs": max(1, round(epoch))}
    return found | {"max_steps": best_step}


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
