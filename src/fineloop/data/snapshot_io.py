"""Snapshots on disk: splits and tables as HF `datasets` folders plus `snapshot.json`.

Every task writes its snapshot through these, so every snapshot loads the same way
(`datasets.load_from_disk`) in a notebook, in TRL or in sentence-transformers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fineloop.data.splits import SPLITS
from fineloop.errors import Invalid, NotFound

META = "snapshot.json"


def save_splits(
    folder: Path, rows: Sequence[Mapping[str, Any]], features: Mapping[str, Any]
) -> dict[str, int]:
    """Write rows (each with a "split" key) as a DatasetDict with every split, even
    empty ones, typed by `features` (column name -> `datasets` feature). Returns the sizes."""
    from datasets import Dataset, DatasetDict, Features  # type: ignore[import-untyped]

    typed = Features(dict(features))
    columns = list(typed)
    splits = DatasetDict(
        {
            # Column-wise, so an empty split still carries its columns.
            name: Dataset.from_dict(
                {c: [r[c] for r in rows if r["split"] == name] for c in columns},
                features=typed,
            )
            for name in SPLITS
        }
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    # An empty split saved with no shard cannot be loaded back: give it one.
    empty = {name: 1 for name in SPLITS if len(splits[name]) == 0}
    splits.save_to_disk(str(folder), num_shards=empty)
    return {name: len(splits[name]) for name in SPLITS}


def save_table(folder: Path, columns: Mapping[str, list[Any]], features: Mapping[str, Any]) -> None:
    """Write one table (a catalog, say) as a `datasets.Dataset`."""
    from datasets import Dataset, Features

    folder.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(dict(columns), features=Features(dict(features))).save_to_disk(str(folder))


def write_meta(out_dir: Path, meta: Mapping[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / META).write_text(json.dumps(dict(meta), indent=2, ensure_ascii=False))


def read_meta(snapshot: Path) -> dict[str, Any]:
    """The snapshot's `snapshot.json`, or {} for a folder made by hand without one."""
    path = Path(snapshot) / META
    meta: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    return meta


def load_splits(folder: Path) -> Any:
    """The DatasetDict saved by `save_splits` (404 when the folder is missing)."""
    from datasets import DatasetDict, load_from_disk

    if not folder.exists():
        raise NotFound(f"no snapshot at {folder.parent} (missing {folder.name}/)", field="snapshot")
    loaded = load_from_disk(str(folder))
    if not isinstance(loaded, DatasetDict):
        raise Invalid(f"{folder} is not a dataset with splits", field="snapshot")
    return loaded


def load_split(folder: Path, split: str) -> Any:
    if split not in SPLITS:
        raise Invalid(f"unknown split {split!r}; valid: {', '.join(SPLITS)}", field="split")
    splits = load_splits(folder)
    if split not in splits:
        raise Invalid(f"the snapshot has no {split} split", field="split")
    return splits[split]


def load_table(folder: Path) -> Any:
    from datasets import Dataset, load_from_disk

    loaded = load_from_disk(str(folder))
    if not isinstance(loaded, Dataset):
        raise Invalid(f"{folder} is not a single table", field="snapshot")
    return loaded
