"""A NER snapshot as training and evaluation read it: texts, gold spans, the tag set.

The builder writes one row per text (`text`, `spans`, `document`, `feedback_ids`) in the
splits train / validation / test under `examples/`, and the project's `entity_types` and
`labelling` in snapshot.json's config. A folder made by hand may hold the splits at its
root instead, and may leave the types out (then: the span labels found, sorted).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fineloop.data.snapshot_io import load_split, load_splits, read_meta
from fineloop.errors import Invalid, NotFound
from fineloop.tasks.ner.align import Labelling
from fineloop.tasks.ner.options import NerOptions
from fineloop.tasks.ner.spans import Span

EXAMPLES = "examples"  # the splits' folder inside a snapshot
DATASET_DICT = "dataset_dict.json"


@dataclass(frozen=True)
class Texts:
    """One split's texts and their gold spans, in stored order."""

    texts: list[str]
    spans: list[list[Span]]

    def __len__(self) -> int:
        return len(self.texts)


def examples_folder(snapshot: Path) -> Path:
    """Where the snapshot's splits are: `examples/`, else the snapshot folder itself."""
    snapshot = Path(snapshot)
    for folder in (snapshot / EXAMPLES, snapshot):
        if (folder / DATASET_DICT).is_file():
            return folder
    raise NotFound(f"no NER snapshot at {snapshot} (missing {EXAMPLES}/)", field="snapshot")


def rows_to_texts(rows: Any) -> Texts:
    spans = [
        sorted(Span(int(s["start"]), int(s["end"]), str(s["label"])) for s in row_spans or [])
        for row_spans in rows["spans"]
    ]
    return Texts([str(t) for t in rows["text"]], spans)


def read_split(snapshot: Path, split: str) -> Texts:
    return rows_to_texts(load_split(examples_folder(snapshot), split))


def read_options(snapshot: Path) -> NerOptions:
    """The tag set and labelling the snapshot was built for."""
    config = read_meta(Path(snapshot)).get("config") or {}
    types = config.get("entity_types")
    if not types:  # a hand-made snapshot: the types its spans use
        splits = load_splits(examples_folder(snapshot))
        found = {s["label"] for name in splits for row in splits[name]["spans"] for s in row}
        types = sorted(found)
    if not types:
        raise Invalid(
            "the snapshot names no entity types (config.entity_types) and has no spans",
            field="snapshot",
        )
    labelling: Labelling = config.get("labelling") or "first"
    return NerOptions.model_validate({"entity_types": list(types), "labelling": labelling})
