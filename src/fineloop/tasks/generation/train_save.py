"""Saving a trained adapter: the folder, its base, its replay sample and what ran.

The adapter is written to a work folder and then moved into `out_dir` with
`adapter_config.json` last, so a run that dies part way leaves no folder that looks like a
complete adapter.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from datasets import Dataset  # type: ignore[import-untyped]

import fineloop
from fineloop.data.snapshot_io import read_meta
from fineloop.tasks.generation.config import GenerationTrainConfig
from fineloop.tasks.generation.models import write_adapter_base
from fineloop.tasks.generation.train_rows import write_replay

RECORD = "fineloop_training.json"


def summary(history: list[dict[str, Any]]) -> dict[str, float]:
    """The stage's final numbers: train loss, runtime, last logged reward margins."""
    found: dict[str, float] = {}
    for entry in history:
        for key in ("loss", "rewards/margins", "rewards/accuracies", "kl"):
            if key in entry:
                found[f"last_{key}"] = float(entry[key])
        for key in ("train_loss", "train_runtime", "train_samples_per_second"):
            if key in entry:
                found[key] = float(entry[key])
    return found


def stamp(
    snapshot: Path,
    base: str,
    adapter: str | None,
    config: GenerationTrainConfig,
    *,
    bf16: bool,
    qlora: bool,
) -> dict[str, Any]:
    """What the artifact needs to be understood later: config, versions, data, precision."""
    return {
        "task": "generation",
        "fineloop_version": fineloop.__version__,
        "base_model": base,
        "continued_from": adapter,
        "snapshot_id": read_meta(snapshot).get("id", Path(snapshot).name),
        "config": config.model_dump(mode="json"),
        "precision": "bf16" if bf16 else "fp32",
        "qlora": qlora,
    }


def save(
    model: Any,
    out_dir: Path,
    work: Path,
    base: str,
    rows: dict[str, Dataset],
    methods: list[str],
    old_replay: dict[str, Dataset],
    config: GenerationTrainConfig,
    record: dict[str, Any],
) -> None:
    """Write the adapter under `work`, then move it into `out_dir`."""
    folder = work / "adapter"
    model.save_pretrained(str(folder), selected_adapters=["default"])
    write_adapter_base(folder, base)
    trained = {m: rows[m] for m in methods}
    record["replay_saved"] = write_replay(folder, trained, old_replay, config.seed)
    (folder / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
    out_dir.mkdir(parents=True, exist_ok=True)
    for entry in sorted(folder.iterdir(), key=lambda p: p.name == "adapter_config.json"):  # last
        target = out_dir / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        target.unlink(missing_ok=True)
        shutil.move(str(entry), str(target))
