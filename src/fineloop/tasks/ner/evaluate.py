"""Held-out entity-level scores of a NER model on one split of a snapshot.

The model's spans (`NerPredictor.extract`) and the gold spans are both turned into BIO
tags over the same words, so two models with different tokenizers are scored on one
segmentation: words are runs of letters/digits/underscore, and each other non-space
character alone (`WORD`). A span covers the words it overlaps (`align.word_tags`).

Metrics (seqeval, entity level: an entity counts when its type and words match exactly):
- `precision`, `recall`, `f1`: micro averages over all entities (the primary is `f1`);
  `f1_strict`: the same F1 in seqeval's strict IOB2 mode;
- per type T: `precision_T`, `recall_T`, `f1_T`, `support_T` (gold entities of T);
  a declared type neither in the gold nor in the output reports zeros.

The gate's paired bootstrap over texts resamples `ratio_parts`, each text's (2·tp,
gold + predicted entities), and recomputes the micro F1 of every resample: the interval
is about F1 itself. (A mean of per-text F1s would score an empty text 1.0 for a model that
finds nothing, and on a corpus of mostly empty texts, such as tweets, promote it.)
`per_example` keeps each text's own F1, 2·tp / (gold + predicted), 1.0 when both are
empty, for reading text by text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fineloop.errors import Invalid
from fineloop.tasks.base import Evaluation
from fineloop.tasks.ner.align import SpanLike, WordRange, word_tags
from fineloop.tasks.ner.train_data import read_options, read_split

WORD = re.compile(r"\w+|[^\w\s]")
SAMPLES = 8  # texts kept with both span sets for people to read
SAMPLE_CHARS = 600  # of each sample's text (spans past it are left out)


def evaluate(model: str, snapshot: Path, split: str = "test") -> Evaluation:
    from fineloop.tasks.ner.predict import NerPredictor

    rows = read_split(snapshot, split)
    if not len(rows):
        raise Invalid(f"the snapshot's {split} split has no texts", field="split")
    options = read_options(snapshot)
    types = options.entity_types
    predicted = NerPredictor(model, tags=options.tags()).extract(rows.texts)
    found = [[_Span.of(s) for s in spans] for spans in predicted]
    metrics, per_example, parts = score(rows.texts, rows.spans, found, types)
    return Evaluation(
        metrics=metrics,
        primary="f1",
        per_example=per_example,
        higher_is_better=True,
        samples=samples(rows.texts, rows.spans, predicted),
        ratio_parts=parts,
    )


class _Span:
    """A predicted span dict seen as a span."""

    __slots__ = ("end", "label", "start")

    def __init__(self, start: int, end: int, label: str) -> None:
        self.start, self.end, self.label = start, end, label

    @classmethod
    def of(cls, raw: dict[str, Any]) -> _Span:
        return cls(int(raw["start"]), int(raw["end"]), str(raw["label"]))


def words_of(text: str) -> list[WordRange]:
    return [(m.start(), m.end()) for m in WORD.finditer(text)]


def entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, first word, last word) of each entity in well-formed BIO tags."""
    found: set[tuple[str, int, int]] = set()
    start: int | None = None
    label = ""
    for index, tag in enumerate([*tags, "O"]):
        if start is not None and not (tag.startswith("I-") and tag[2:] == label):
            found.add((label, start, index - 1))
            start = None
        if tag.startswith("B-") or (tag.startswith("I-") and start is None):
            start, label = index, tag[2:]
    return found


def score(
    texts: Sequence[str],
    gold: Sequence[Sequence[SpanLike]],
    predicted: Sequence[Sequence[SpanLike]],
    types: Sequence[str],
) -> tuple[dict[str, float], list[float], list[tuple[float, float]]]:
    """The metrics, per-text F1 and per-text (2·tp, gold + predicted) of predicted spans
    against gold ones (module doc)."""
    from seqeval.metrics import classification_report, f1_score  # type: ignore[import-untyped]
    from seqeval.scheme import IOB2  # type: ignore[import-untyped]

    y_true: list[list[str]] = []
    y_pred: list[list[str]] = []
    per_example: list[float] = []
    parts: list[tuple[float, float]] = []
    for text, gold_spans, found_spans in zip(texts, gold, predicted, strict=True):
        words = words_of(text)
        true_tags, found_tags = word_tags(words, gold_spans), word_tags(words, found_spans)
        y_true.append(true_tags)
        y_pred.append(found_tags)
        ours, theirs = entities(true_tags), entities(found_tags)
        total = len(ours) + len(theirs)
        per_example.append(1.0 if total == 0 else 2 * len(ours & theirs) / total)
        parts.append((2.0 * len(ours & theirs), float(total)))
    # No entity on either side: seqeval would average nothing (numpy warnings); all zeros.
    some = any(t != "O" for tags in (*y_true, *y_pred) for t in tags)
    report: dict[str, Any] = (
        classification_report(y_true, y_pred, output_dict=True, zero_division=0) if some else {}
    )
    strict = f1_score(y_true, y_pred, mode="strict", scheme=IOB2, zero_division=0) if some else 0
    micro = report.get("micro avg", {})
    metrics = {
        "precision": float(micro.get("precision", 0.0)),
        "recall": float(micro.get("recall", 0.0)),
        "f1": float(micro.get("f1-score", 0.0)),
        "f1_strict": float(strict),
        "texts": float(len(texts)),
    }
    for name in dict.fromkeys([*types, *(k for k in report if not k.endswith(" avg"))]):
        row = report.get(name, {})
        metrics[f"precision_{name}"] = float(row.get("precision", 0.0))
        metrics[f"recall_{name}"] = float(row.get("recall", 0.0))
        metrics[f"f1_{name}"] = float(row.get("f1-score", 0.0))
        metrics[f"support_{name}"] = float(row.get("support", 0))
    return metrics, per_example, parts


def samples(
    texts: Sequence[str], gold: Sequence[Sequence[SpanLike]], predicted: list[list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The first texts with their gold and predicted spans, for the dashboard."""
    rows = []
    for text, gold_spans, found in zip(texts[:SAMPLES], gold, predicted, strict=False):
        shown = text[:SAMPLE_CHARS]
        reference = [
            {"start": s.start, "end": s.end, "label": s.label, "text": text[s.start : s.end]}
            for s in gold_spans
            if s.end <= len(shown)
        ]
        output = [dict(s) for s in found if s["end"] <= len(shown)]
        rows.append(
            {
                "input": {"text": shown},
                "reference": {"spans": reference},
                "output": {"spans": output},
            }
        )
    return rows
