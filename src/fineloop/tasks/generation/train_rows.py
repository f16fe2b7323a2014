"""Which stages a run trains and on which rows: the snapshot's train splits, the replay
sample the starting adapter carries, and KTO's class weights.

Replay: an adapter folder holds `replay/<method>/` (HF datasets, at most `REPLAY_CAP` rows
each), a sample of what it was trained on. A run from it draws `replay_share` of each
stage's rows from there and leaves a new sample (its own rows plus the old sample) in its
own adapter, so earlier skills stay in the mix without the loop knowing about it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from datasets import Dataset, concatenate_datasets, load_from_disk  # type: ignore[import-untyped]

from fineloop.data.snapshot_io import load_splits
from fineloop.errors import Invalid
from fineloop.tasks.generation.config import METHODS

# The columns each TRL trainer reads (conversational format).
COLUMNS: dict[str, tuple[str, ...]] = {
    "sft": ("prompt", "completion"),
    "dpo": ("prompt", "chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
}
REPLAY = "replay"
REPLAY_CAP = 2000
KTO_RATIO = (1.0, 4.0 / 3.0)  # TRL's advice for desirable·n_d / (undesirable·n_u)


def read_train(snapshot: Path) -> dict[str, Dataset]:
    """Each method's train rows, reduced to the trainer's columns (empty when missing)."""
    rows: dict[str, Dataset] = {}
    for method in METHODS:
        folder = Path(snapshot) / method
        if not folder.exists():
            rows[method] = Dataset.from_dict({c: [] for c in COLUMNS[method]})
            continue
        train = load_splits(folder)["train"]
        missing = [c for c in COLUMNS[method] if c not in train.column_names]
        if missing:
            raise Invalid(
                f"the snapshot's {method}/ rows lack {', '.join(missing)}: rebuild the snapshot",
                field="snapshot",
            )
        rows[method] = train.select_columns(list(COLUMNS[method]))
    return rows


def choose_methods(method: str, counts: dict[str, int]) -> list[str]:
    """The stages to run, in order, for the config's `method` and the train rows there are."""
    if method == "auto":
        chosen = [m for m in ("sft", "dpo") if counts[m] > 0]
        if counts["dpo"] == 0 and counts["kto"] > 0:
            chosen.append("kto")
        if not chosen:
            raise Invalid(
                "the snapshot has nothing to train on: its train split has no completions "
                "(corrections, good answers), preference pairs or thumbs; collect such "
                "feedback and build a new snapshot",
                field="snapshot",
            )
        return chosen
    chosen = method.split("+")
    for stage in chosen:
        if counts[stage] == 0:
            raise Invalid(
                f"method {method!r} needs {stage} rows but the snapshot's {stage} train split "
                f"is empty (rows: {counts}); use method 'auto' or collect that feedback",
                field="train.method",
            )
    return chosen


def read_replay(adapter: str | None) -> dict[str, Dataset]:
    """The replay sample an adapter folder carries, per method ({} without one)."""
    if adapter is None:
        return {}
    found: dict[str, Dataset] = {}
    for method in METHODS:
        folder = Path(adapter) / REPLAY / method
        if folder.is_dir():
            found[method] = load_from_disk(str(folder)).select_columns(list(COLUMNS[method]))
    return found


def replay_count(rows: int, available: int, share: float) -> int:
    """Replay rows so they make `share` of the mix, within what is available."""
    if rows == 0 or available == 0 or share <= 0:
        return 0
    return min(available, round(share * rows / (1.0 - share)))


def sample(rows: Dataset, count: int, seed: int) -> Dataset:
    """`count` rows drawn without replacement (all of them when there are fewer)."""
    if count >= len(rows):
        return rows
    picked = sorted(random.Random(seed).sample(range(len(rows)), count))
    return rows.select(picked)


def mix(rows: Dataset, replay: Dataset | None, share: float, seed: int) -> tuple[Dataset, int]:
    """The stage's training rows: `rows` plus a seeded replay sample; and how many that is."""
    if replay is None:
        return rows, 0
    count = replay_count(len(rows), len(replay), share)
    if count == 0:
        return rows, 0
    drawn = sample(replay, count, seed).cast(rows.features)
    return concatenate_datasets([rows, drawn]), count


def write_replay(
    folder: Path, trained: dict[str, Dataset], old: dict[str, Dataset], seed: int
) -> dict[str, int]:
    """Save the new adapter's replay: its own rows plus the old sample, capped per method."""
    sizes: dict[str, int] = {}
    for method in METHODS:
        parts = [d for d in (trained.get(method), old.get(method)) if d is not None and len(d)]
        if not parts:
            continue
        features = parts[0].features
        pool = concatenate_datasets([p.cast(features) for p in parts])
        kept = sample(pool, REPLAY_CAP, seed)
        kept.save_to_disk(str(folder / REPLAY / method))
        sizes[method] = len(kept)
    return sizes


def kto_weights(labels: list[bool]) -> dict[str, Any]:
    """Desirable/undesirable weights putting weighted desirable : undesirable in TRL's
    recommended [1, 4/3]; the majority class is weighted down (weights never exceed 1)."""
    desirable = sum(1 for label in labels if label)
    undesirable = len(labels) - desirable
    weights = {"desirable_weight": 1.0, "undesirable_weight": 1.0}
    if desirable and undesirable:
        ratio = desirable / undesirable
        if ratio > KTO_RATIO[1]:
            weights["desirable_weight"] = 1.0 / ratio
        elif ratio < KTO_RATIO[0]:
            weights["undesirable_weight"] = ratio
    return {**weights, "desirable": desirable, "undesirable": undesirable}
