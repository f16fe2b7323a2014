"""What the NER benchmarks share: WNUT-17 read as published, a fineloop snapshot made from
it through the `conll` import converter and the NER builder's row mapping, one scorer for
every model (entity-level seqeval on the published tokens); child processes: _child.py.

Scoring is the same for every side: a model's character spans on a sentence (its tokens
joined by single spaces, as the `conll` converter writes the text) become one BIO tag per
published token (a token any of whose characters a span covers takes the span's type;
the span's first token is B-), and seqeval's entity-level precision, recall and F1 (its
default, CoNLL-style mode) compare them with the published tags. A bare token classifier
tags the tokens directly. Per-sentence entity counts give paired bootstrap intervals.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

WNUT_TYPES = ["person", "location", "group", "corporation", "product", "creative-work"]
WNUT_FILES = {
    "train": "wnut17train.conll",
    "validation": "emerging.dev.conll",
    "test": "emerging.test.annotated",
}
SEED = 13  # fineloop's default training seed: every side uses it
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def datasets_root() -> Path:
    """FINELOOP_BENCH_DATASETS, else FINELOOP_TEST_DATASETS, else ../shared/datasets."""
    given = os.environ.get("FINELOOP_BENCH_DATASETS") or os.environ.get("FINELOOP_TEST_DATASETS")
    return Path(given) if given else Path(__file__).resolve().parents[2] / "shared" / "datasets"


def minilm_path() -> str:
    """The packaged all-MiniLM-L6-v2 folder (its BERT gets a fresh head; never a download)."""
    from fineloop.tasks.embedding.config import packaged_minilm_path

    return packaged_minilm_path()


# --- data -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sentence:
    tokens: list[str]
    tags: list[str]

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    def conll(self) -> str:
        return "".join(f"{t}\t{g}\n" for t, g in zip(self.tokens, self.tags, strict=True))


def read_conll(path: Path) -> list[Sentence]:
    """A CoNLL file's sentences: token in the first column, tag in the last; any
    whitespace-only line ends a sentence (WNUT-17's train file uses a lone TAB)."""
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        columns = line.split()
        if not columns:
            if tokens:
                sentences.append(Sentence(tokens, tags))
            tokens, tags = [], []
            continue
        tokens.append(columns[0])
        tags.append(columns[-1])
    if tokens:
        sentences.append(Sentence(tokens, tags))
    return sentences


def wnut17() -> dict[str, list[Sentence]]:
    """train / validation / test as published (3,394 / 1,009 / 1,287 sentences)."""
    folder = datasets_root() / "wnut17"
    if not folder.is_dir():
        raise SystemExit(f"no WNUT-17 at {folder}: set FINELOOP_BENCH_DATASETS")
    return {split: read_conll(folder / name) for split, name in WNUT_FILES.items()}


def distinct(sentences: Sequence[Sentence]) -> list[Sentence]:
    """One sentence per text, the last one of a repeated text (as the builder keeps the
    newest label of a text), in first-seen order: what both sides train on."""
    last = {s.text: s for s in sentences}
    seen: dict[str, Sentence] = {}
    for s in sentences:
        seen.setdefault(s.text, last[s.text])
    return list(seen.values())


def to_conll(sentences: Sequence[Sentence]) -> bytes:
    return "\n".join(s.conll() for s in sentences).encode()


def save_sentences(path: Path, sentences: Sequence[Sentence]) -> None:
    path.write_text(json.dumps([[s.tokens, s.tags] for s in sentences]))


def load_sentences(path: Path) -> list[Sentence]:
    return [Sentence(tokens, tags) for tokens, tags in json.loads(path.read_text())]


def label_records(data: bytes, first_id: int = 1) -> list[Any]:
    """The `conll` converter's label events as the builder reads feedback records."""
    from fineloop.data.records import FeedbackRecord
    from fineloop.feedback.events import payload_of
    from fineloop.tasks.ner.imports import CONVERTERS

    _, events = CONVERTERS["conll"](data)
    now = datetime.now(UTC)
    return [
        FeedbackRecord(
            id=first_id + index,
            kind=event.kind,
            payload=payload_of(event),
            input=event.input,
            user_id=None,
            timestamp=now,
            reward=1.0,
            effective_reward=1.0,
            trainable=True,
            metadata=dict(event.metadata),
            interaction_id=None,
            interaction=None,
        )
        for index, event in enumerate(events)
    ]


def published_snapshot(out_dir: Path, splits: dict[str, Sequence[Sentence]]) -> dict[str, int]:
    """A NER snapshot under `out_dir` in the builder's format, with the published splits:
    each split's sentences go through the `conll` converter (label events) and the
    builder's mapping (`build.harvest`: one row per distinct text, newest label wins),
    and are saved with the builder's columns and config. (The builder's own split is by
    a seeded hash of the document; a benchmark needs the published one.)"""
    from fineloop.data.hashing import content_hash
    from fineloop.data.records import ProjectData, ProjectInfo
    from fineloop.data.snapshot_io import save_splits, write_meta
    from fineloop.feedback.rewards import RewardPolicy
    from fineloop.tasks.ner.build import EXAMPLES, harvest, row_features
    from fineloop.tasks.ner.options import NerOptions

    options = NerOptions(entity_types=WNUT_TYPES)
    info = ProjectInfo("wnut17", "ner", None, RewardPolicy(), options=options.model_dump())
    rows: list[dict[str, Any]] = []
    first_id = 1
    for split, sentences in splits.items():
        records = label_records(to_conll(sentences), first_id)
        first_id += len(records)
        data = ProjectData(info, tuple(records), (), first_id - 1, None)
        rows += [row | {"split": split} for row in harvest(data, options).rows]
    sizes = save_splits(out_dir / EXAMPLES, rows, row_features())
    config = {"entity_types": WNUT_TYPES, "labelling": options.labelling, "splits": "published"}
    write_meta(
        out_dir,
        {"id": content_hash({"config": config, "rows": rows}), "task": "ner", "config": config}
        | {"splits": sizes},
    )
    return sizes


# --- scoring ----------------------------------------------------------------------------


def tags_from_spans(sentence: Sentence, spans: Sequence[dict[str, Any]]) -> list[str]:
    """One BIO tag per token of `sentence` from character spans on its text."""
    offsets, at = [], 0
    for token in sentence.tokens:
        offsets.append((at, at + len(token)))
        at += len(token) + 1
    tags = ["O"] * len(sentence.tokens)
    for span in sorted(spans, key=lambda s: (s["start"], s["end"])):
        first = True
        for index, (start, end) in enumerate(offsets):
            if start < span["end"] and span["start"] < end and tags[index] == "O":
                tags[index] = ("B-" if first else "I-") + span["label"]
                first = False
    return tags


def entity_counts(gold: Sequence[list[str]], found: Sequence[list[str]]) -> list[list[int]]:
    """Per sentence: [true positives, predicted entities, gold entities] (seqeval's
    entity extraction, so the totals give seqeval's micro scores)."""
    from seqeval.metrics.sequence_labeling import get_entities

    counts = []
    for g, f in zip(gold, found, strict=True):
        gold_set, found_set = set(get_entities(g)), set(get_entities(f))
        counts.append([len(gold_set & found_set), len(found_set), len(gold_set)])
    return counts


def prf(counts: Sequence[Sequence[int]]) -> dict[str, float]:
    tp = sum(c[0] for c in counts)
    predicted = sum(c[1] for c in counts)
    gold = sum(c[2] for c in counts)
    precision = tp / predicted if predicted else 0.0
    recall = tp / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall}


def score(sentences: Sequence[Sentence], found: Sequence[list[str]]) -> dict[str, Any]:
    """Entity-level micro P/R/F1 (checked against seqeval's own), per-type F1, and the
    per-sentence counts (for bootstraps)."""
    from seqeval.metrics import classification_report, f1_score

    gold = [s.tags for s in sentences]
    counts = entity_counts(gold, found)
    metrics = prf(counts)
    assert abs(metrics["f1"] - f1_score(gold, list(found), zero_division=0)) < 1e-9
    report = classification_report(gold, list(found), output_dict=True, zero_division=0)
    per_type = {t: round(float(report[t]["f1-score"]), 4) for t in WNUT_TYPES if t in report}
    return {"metrics": metrics, "per_type_f1": per_type, "counts": counts}


def bootstrap_f1_difference(
    a: Sequence[Sequence[int]], b: Sequence[Sequence[int]], samples: int = 1000, seed: int = 13
) -> dict[str, float]:
    """F1(a) - F1(b) over the same sentences, with a 95% paired bootstrap interval
    (sentences resampled, F1 recomputed from the summed counts)."""
    rng = random.Random(seed)
    n = len(a)
    diffs = []
    for _ in range(samples):
        picks = [rng.randrange(n) for _ in range(n)]
        diffs.append(prf([a[i] for i in picks])["f1"] - prf([b[i] for i in picks])["f1"])
    diffs.sort()
    return {
        "mean": prf(a)["f1"] - prf(b)["f1"],
        "low": diffs[int(0.025 * samples)],
        "high": diffs[int(0.975 * samples) - 1],
    }


def predict_tags(model: str, sentences: Sequence[Sentence]) -> list[list[str]]:
    """Token tags of `sentences` from a fineloop NER folder, through `NerPredictor`."""
    from fineloop.tasks.ner.predict import NerPredictor

    predictor = NerPredictor(model, batch_size=32)
    spans = predictor.extract([s.text for s in sentences])
    return [tags_from_spans(s, found) for s, found in zip(sentences, spans, strict=True)]
