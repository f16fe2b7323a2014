"""Loaders for the shared datasets the embedding benchmarks use (read at run time, never copied).

- StackFAQ: 125 threads, each with 10 paraphrased queries split by a "*" marker: the first 5
  train, the last 5 test; the item is the thread (title + answers).
- banking77: customer queries labelled with 77 intents; the item is the intent, described by
  its name; train.csv trains, test.csv tests.
"""

from __future__ import annotations

import csv
import html
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@dataclass(frozen=True)
class RetrievalSet:
    """Items to retrieve, and (query, right item id) pairs to train and test on."""

    name: str
    items: dict[str, str]
    train: list[tuple[str, str]]
    test: list[tuple[str, str]]


def _clean(text: str | None) -> str:
    return " ".join(html.unescape(text or "").split())


def stackfaq(root: Path = DATASETS) -> RetrievalSet:
    tree = ET.parse(root / "stackfaq" / "stackExchange-FAQ.xml")
    items: dict[str, str] = {}
    train: list[tuple[str, str]] = []
    test: list[tuple[str, str]] = []
    for number, pair in enumerate(tree.getroot().iter("qapair")):
        item_id = f"thread-{number:03d}"
        question = _clean(pair.findtext("question"))
        answers = [_clean(a.text) for a in pair.findall("answer")]
        items[item_id] = " ".join([question, *answers])[:2000]
        paraphrases = [_clean(r.text) for r in pair.findall("rephr")]
        marker = paraphrases.index("*")
        train += [(q, item_id) for q in paraphrases[:marker] if q]
        test += [(q, item_id) for q in paraphrases[marker + 1 :] if q]
    return RetrievalSet("stackfaq", items, train, test)


def banking77(root: Path = DATASETS, train_per_intent: int | None = None) -> RetrievalSet:
    folder = root / "banking77"
    intents = json.loads((folder / "categories.json").read_text())
    items = {intent: intent.replace("_", " ") for intent in intents}

    def rows(name: str) -> list[tuple[str, str]]:
        with (folder / name).open(newline="") as handle:
            return [(row["text"].strip(), row["category"]) for row in csv.DictReader(handle)]

    train = rows("train.csv")
    if train_per_intent is not None:
        taken: dict[str, int] = {}
        kept = []
        for query, intent in train:
            if taken.get(intent, 0) < train_per_intent:
                taken[intent] = taken.get(intent, 0) + 1
                kept.append((query, intent))
        train = kept
    return RetrievalSet("banking77", items, train, rows("test.csv"))


def load_set(
    name: str, *, item_chars: int, per_intent: int, quick: bool, quick_items: int = 30
) -> RetrievalSet:
    """A dataset as the embedding benchmarks use it: StackFAQ threads cut to `item_chars`,
    Banking77 with `per_intent` training queries per intent; `quick` keeps a small part
    (StackFAQ: the first `quick_items` threads; Banking77: every 10th test query)."""
    if name == "stackfaq":
        data = stackfaq()
        items = {key: text[:item_chars] for key, text in data.items.items()}
        data = RetrievalSet(data.name, items, data.train, data.test)
        if quick:
            keep = set(sorted(data.items)[:quick_items])
            data = RetrievalSet(
                data.name,
                {k: v for k, v in data.items.items() if k in keep},
                [p for p in data.train if p[1] in keep],
                [p for p in data.test if p[1] in keep],
            )
        return data
    if name == "banking77":
        data = banking77(train_per_intent=per_intent)
        if quick:
            data = RetrievalSet(data.name, data.items, data.train, data.test[::10])
        return data
    raise SystemExit(f"unknown dataset {name!r}")
