"""Online adaptation of NER between retrains: a gazetteer of the surface forms users
marked, matched on token boundaries and merged with the model's spans.

A surface form is the span's text cut into tokens (runs of word characters, and each other
non-space character on its own) and case-folded, so "Flowserve  PUMP" and "flowserve pump"
are one form, and "pump" never matches inside "pumpkin" or "pumps". The gazetteer maps a
form to the label users gave it last, or to nothing: a form users removed (suppressed).

Merging (`merge`): a model span whose form is suppressed is dropped; every gazetteer match
becomes a span of score `memory_score` (source "memory") that wins overlaps against model
spans of a lower score. A match equal to a model span (same offsets and label) stays the
model's. Everything here is pure: adapt_memory.py builds the `View` from feedback in the
background, serving.py applies it to each request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MEMORY_SCORE = 0.99
MAX_FORM_TOKENS = 8  # a longer "entity" is a sentence: not kept, and lookups stay cheap
MAX_FORM_CHARS = 200
_TOKEN = re.compile(r"\w+|[^\w\s]")

Form = tuple[str, ...]


def tokens(text: str) -> list[tuple[int, int, str]]:
    """(start, end, case-folded token) of every token of `text`."""
    return [(m.start(), m.end(), m.group().casefold()) for m in _TOKEN.finditer(text)]


def form_of(surface: str) -> Form | None:
    """The gazetteer key of a span's text; None for one that cannot be a key (no token,
    too long)."""
    if len(surface) > MAX_FORM_CHARS:
        return None
    found = tuple(t for _, _, t in tokens(surface))
    return found if 0 < len(found) <= MAX_FORM_TOKENS else None


def display(form: Form) -> str:
    return " ".join(form)


@dataclass(frozen=True)
class Entry:
    """What users said last about one form: its `label`, or None (they removed it)."""

    label: str | None
    feedback_id: int


@dataclass(frozen=True)
class View:
    """An immutable gazetteer, swapped in whole by each refresh: the labelled forms, the
    suppressed ones, and every proper prefix of a labelled form (so a lookup stops at the
    first token that starts none)."""

    labels: Mapping[Form, Entry] = field(default_factory=dict)
    suppressed: frozenset[Form] = frozenset()
    prefixes: frozenset[Form] = frozenset()

    @classmethod
    def of(cls, entries: Mapping[Form, Entry]) -> View:
        labels = {f: e for f, e in entries.items() if e.label is not None}
        suppressed = frozenset(f for f, e in entries.items() if e.label is None)
        prefixes = frozenset(f[:i] for f in labels for i in range(1, len(f)))
        return cls(labels, suppressed, prefixes)

    def __bool__(self) -> bool:
        return bool(self.labels or self.suppressed)


def matches(view: View, text: str) -> list[tuple[int, int, str, int]]:
    """The gazetteer's forms found in `text`: (start, end, label, feedback id), leftmost
    longest first, never overlapping."""
    if not view.labels:
        return []
    toks = tokens(text)
    words = [t for _, _, t in toks]
    found: list[tuple[int, int, str, int]] = []
    i = 0
    while i < len(toks):
        best: tuple[int, Entry] | None = None
        for j in range(i + 1, min(i + MAX_FORM_TOKENS, len(toks)) + 1):
            key = tuple(words[i:j])
            entry = view.labels.get(key)
            if entry is not None:
                best = (j, entry)
            if key not in view.prefixes:
                break
        if best is None:
            i += 1
            continue
        j, entry = best
        assert entry.label is not None
        found.append((toks[i][0], toks[j - 1][1], entry.label, entry.feedback_id))
        i = j
    return found


def merge(
    model: Sequence[Mapping[str, Any]],
    view: View,
    text: str,
    memory_score: float = MEMORY_SCORE,
) -> list[dict[str, Any]]:
    """The spans to return for `text`: the model's (minus suppressed forms) and the
    gazetteer's, each marked with its `source`, sorted and never overlapping."""
    spans = [
        _span(s["start"], s["end"], s["label"], float(s["score"]), text, "model")
        for s in model
        if form_of(text[s["start"] : s["end"]]) not in view.suppressed
    ]
    said = {(s["start"], s["end"], s["label"]) for s in spans}
    for start, end, label, feedback_id in matches(view, text):
        if (start, end, label) not in said:
            spans.append(_span(start, end, label, memory_score, text, "memory", feedback_id))
    # Highest score first; at equal scores what users said beats the model, longer first.
    spans.sort(key=lambda s: (-s["score"], s["source"] != "memory", s["start"] - s["end"]))
    kept: list[dict[str, Any]] = []
    for span in spans:
        if all(span["end"] <= k["start"] or k["end"] <= span["start"] for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s["start"])


def model_only(model: Sequence[Mapping[str, Any]], text: str) -> list[dict[str, Any]]:
    """The model's spans as served without adaptation (marked source "model")."""
    return [
        _span(s["start"], s["end"], s["label"], float(s["score"]), text, "model") for s in model
    ]


def _span(
    start: int,
    end: int,
    label: str,
    score: float,
    text: str,
    source: str,
    feedback_id: int | None = None,
) -> dict[str, Any]:
    """A served span; `feedback_id`: the feedback a memory span comes from."""
    return {
        "start": start,
        "end": end,
        "label": label,
        "score": round(score, 6),
        "text": text[start:end],
        "source": source,
        "feedback_id": feedback_id,
    }
