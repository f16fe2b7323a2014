"""The document_entities example's shipped data and its reviewer, checked without a server:
the seed file imports as it is, the marked-up texts hold only the project's types, and the
edits the simulated reviewer sends resolve to exactly the spans it meant."""

from __future__ import annotations

import importlib.util
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fineloop.tasks.ner.imports import CONVERTERS
from fineloop.tasks.ner.spans import Span, check_spans, corrected_spans

FOLDER = Path(__file__).resolve().parents[2] / "examples" / "document_entities"


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("document_entities_run", FOLDER / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("local_server", None)


def test_seed_imports_with_declared_types(example: ModuleType) -> None:
    _, events = CONVERTERS["spans-jsonl"]((FOLDER / "seed.jsonl").read_bytes())
    assert len(events) == 50
    labels = {span.label for event in events for span in event.spans or []}  # type: ignore[attr-defined]
    assert labels == set(example.TYPES)
    documents = {event.input["document"] for event in events}  # type: ignore[index]
    assert len(documents) == 25  # two sentences per work order, split together


@pytest.mark.parametrize("name", ["incoming.txt", "heldout.txt"])
def test_marked_up_texts_are_valid_spans(example: ModuleType, name: str) -> None:
    rows = example.marked(FOLDER / name)
    assert len(rows) >= 19
    for text, spans in rows:
        assert "[" not in text and "|" not in text
        parsed = [Span(s["start"], s["end"], s["label"]) for s in spans]
        assert check_spans(parsed, text, example.TYPES) == []


def _spans(rng: random.Random, length: int) -> list[dict[str, Any]]:
    """Non-overlapping random spans over `length` characters."""
    cuts = sorted(rng.sample(range(length), rng.randrange(0, 9)))
    pairs = list(zip(cuts[::2], cuts[1::2], strict=False))
    return [{"start": a, "end": b, "label": rng.choice("AB")} for a, b in pairs if b > a]


def test_reviewer_edits_resolve_to_the_right_spans(example: ModuleType) -> None:
    rng = random.Random(5)
    ops: set[str] = set()
    for _ in range(500):
        shown, right = _spans(rng, 40), _spans(rng, 40)
        edits = example.edits(shown, right)
        ops |= {e["op"] for e in edits}
        if not edits:
            assert shown == right
            continue
        resolved = corrected_spans({"spans": shown}, {"edits": edits})
        assert resolved == sorted(Span(r["start"], r["end"], r["label"]) for r in right)
    assert ops == {"delete", "add", "relabel", "move"}
