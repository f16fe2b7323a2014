"""Curriculum: train on the easy examples of each epoch first, the hard ones last.

Two measures of how hard a train row is:

- `base_loss`: the starting model's margin on the row, cos(anchor, positive) minus the
  cosine of the anchor to the closest catalog item that is not a positive of its query
  (the hardest negative the model would rank above or near the answer). A large margin is
  easy. One batched encode: the catalog through `encode_corpus` (the model's vector file,
  so a served or mined model encodes nothing again), the anchors as queries.
- `feedback`: the events' own grade, the row's `score` (higher is easier: a click at rank
  1 that was kept beats a late pick), then more feedback events behind the row.

Ties are broken by a seeded shuffle, so an all-equal measure degenerates to a shuffled
order, not the snapshot's alphabetical one. The rows are sorted before `spec.prepare`
(which keeps row order), and the trainer reads them through an ordered batch sampler: the
library's no-duplicates rule for in-batch-negative losses (a text already in the batch
defers the row to a later batch, never reorders the rest), but over the curriculum order
instead of a fresh permutation; plain consecutive batches for the other losses. Every
epoch repeats the same easy-to-hard order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sentence_transformers.base.sampler import DefaultBatchSampler

if TYPE_CHECKING:
    from datasets import Dataset  # type: ignore[import-untyped]
    from sentence_transformers import SentenceTransformer

ANCHOR_CHUNK = 256  # anchors scored against the catalog at once (memory: chunk x catalog)
EXCLUDED = {"dataset_name"}  # what the library's no-duplicates rule never compares


def difficulty(
    how: str,
    rows: Dataset,
    *,
    model: SentenceTransformer | None = None,
    model_path: str | Path | None = None,
    corpus: Sequence[str] = (),
    positives: dict[str, set[str]] | None = None,
    folder: Path | None = None,
) -> np.ndarray:
    """Per row, how easy it is (higher: easier), by `how` (base_loss or feedback)."""
    if how == "feedback":
        scores = np.asarray(rows["score"], dtype=np.float64)
        events = np.asarray([len(ids) for ids in rows["feedback_ids"]], dtype=np.float64)
        return scores + 1e-6 * np.minimum(events, 1000)  # more events: a little easier
    if how == "base_loss":
        if model is None:
            raise ValueError("the base_loss curriculum needs the starting model")
        return margins(model, model_path, rows, corpus, positives or {}, folder)
    raise ValueError(f"unknown curriculum {how!r}")


def margins(
    model: SentenceTransformer,
    model_path: str | Path | None,
    rows: Dataset,
    corpus: Sequence[str],
    positives: dict[str, set[str]],
    folder: Path | None,
) -> np.ndarray:
    """cos(anchor, positive) - max cos(anchor, catalog item not judged right for it)."""
    import torch

    from fineloop.tasks.embedding.corpus_vectors import encode_corpus

    anchors: list[str] = list(rows["anchor"])
    answers: list[str] = list(rows["positive"])
    texts = list(dict.fromkeys([*corpus, *answers]))
    vectors = encode_corpus(model, texts, model_path=model_path, folder=folder, phase="curriculum")
    where = {text: i for i, text in enumerate(texts)}
    unique = list(dict.fromkeys(anchors))
    with torch.inference_mode():
        queries = model.encode_query(
            unique,
            batch_size=64,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
    query_of = {text: i for i, text in enumerate(unique)}
    out = np.empty(len(anchors), dtype=np.float64)
    for start in range(0, len(anchors), ANCHOR_CHUNK):
        chunk = range(start, min(start + ANCHOR_CHUNK, len(anchors)))
        picked = np.asarray([query_of[anchors[i]] for i in chunk])
        sims = queries[picked] @ vectors.T  # (chunk, catalog)
        for row, i in enumerate(chunk):
            right = [where[t] for t in positives.get(anchors[i], set()) if t in where]
            right.append(where[answers[i]])
            positive = float(sims[row, where[answers[i]]])
            sims[row, right] = -np.inf
            hardest = float(np.max(sims[row])) if np.isfinite(sims[row]).any() else -1.0
            out[i] = positive - hardest
    return out


def easy_first(ease: np.ndarray, seed: int) -> list[int]:
    """Row indices from the easiest to the hardest; ties in a seeded random order."""
    shuffled = list(range(len(ease)))
    random.Random(seed).shuffle(shuffled)
    return sorted(shuffled, key=lambda i: -float(ease[i]))  # stable: ties keep the shuffle


def summary(how: str, ease: np.ndarray, order: list[int]) -> dict[str, Any]:
    """What the stamp records about the order used."""
    if not order:
        return {"order": how, "rows": 0}
    return {
        "order": how,
        "rows": len(order),
        "measure": MEASURES[how],
        "easiest": round(float(ease[order[0]]), 6),
        "hardest": round(float(ease[order[-1]]), 6),
        "median": round(float(np.median(ease)), 6),
    }


MEASURES = {
    "base_loss": "starting model: cos(anchor, positive) - max cos(anchor, non-positive item)",
    "feedback": "row score (higher is easier), then feedback events",
}


# --- batch samplers that keep the dataset's order ----------------------------------------


def ordered_sampler(no_duplicates: bool) -> type:
    """The sampler class the training arguments name (the trainer builds it per dataset)."""
    return OrderedNoDuplicatesBatchSampler if no_duplicates else OrderedBatchSampler


class OrderedBatchSampler(DefaultBatchSampler):
    """Consecutive batches in the dataset's own order (no shuffle)."""

    def __init__(self, dataset: Dataset, batch_size: int, drop_last: bool, **kwargs: Any) -> None:
        from torch.utils.data import SequentialSampler

        super().__init__(SequentialSampler(dataset), batch_size=batch_size, drop_last=drop_last)
        self.valid_label_columns = kwargs.get("valid_label_columns")


class OrderedNoDuplicatesBatchSampler(DefaultBatchSampler):
    """The library's NoDuplicatesBatchSampler rule over the dataset's order: a row that
    shares a text with the batch being filled waits for a later batch; the rows after it
    move up, in order. Label columns are not compared (as the library does)."""

    def __init__(self, dataset: Dataset, batch_size: int, drop_last: bool, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last)
        labels = set(dataset.column_names) & set(kwargs.get("valid_label_columns") or [])
        self.columns = [c for c in dataset.column_names if c not in labels | EXCLUDED]
        self.dataset = dataset

    def __iter__(self) -> Iterator[list[int]]:
        values = [
            {str(v) for v in row}
            for row in zip(*(self.dataset[c] for c in self.columns), strict=True)
        ]
        waiting = list(range(len(values)))
        while waiting:
            batch: list[int] = []
            seen: set[str] = set()
            later: list[int] = []
            for position, index in enumerate(waiting):
                if len(batch) == self.batch_size:
                    later.extend(waiting[position:])
                    break
                if values[index].isdisjoint(seen):
                    batch.append(index)
                    seen |= values[index]
                else:
                    later.append(index)
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch
            waiting = later

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.dataset) // self.batch_size
        return (len(self.dataset) + self.batch_size - 1) // self.batch_size


def curriculum_rows(
    how: str,
    split: Dataset,
    *,
    seed: int,
    model: SentenceTransformer,
    model_path: str | Path,
    corpus: Sequence[str],
    positives: dict[str, set[str]],
    folder: Path | None,
) -> tuple[Dataset, dict[str, Any]]:
    """The train split in the order to learn it, and the stamp's record of that order."""
    if how == "off" or len(split) == 0:
        return split, {"order": "off", "batches": "the library's shuffled sampler"}
    ease = difficulty(
        how,
        split,
        model=model,
        model_path=model_path,
        corpus=corpus,
        positives=positives,
        folder=folder,
    )
    order = easy_first(ease, seed)
    return split.select(order), summary(how, ease, order)
