"""The review page's span editor for NER: the spans shown for a text as lines a person can
fix, one entity per line, `TYPE: its text` (`@offset` added when that text appears more
than once), and those lines back as a correction with the full span set.

A line without `@offset` names the first occurrence after the previous line that named the
same text, so lines in reading order need no offsets. The correction goes through the
family's own checks (declared types, no overlap) like any other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fineloop.errors import Invalid
from fineloop.tasks.base import ReviewEdit, Shown
from fineloop.tasks.ner.options import parse_options
from fineloop.tasks.ner.spans import Span, spans_of, text_of

_OFFSET = re.compile(r"^(?P<surface>.*?)\s+@(?P<offset>[0-9]+)$", re.ASCII | re.DOTALL)


def spans_edit(options: Mapping[str, Any], shown: Shown) -> ReviewEdit | None:
    text = text_of(shown[0])
    if text is None:
        return None
    lines = [line_of(text, span) for span in spans_of(shown[1])]
    types = ", ".join(parse_options(options).entity_types)
    hint = (
        "One entity per line, TYPE: its text as it appears (add @offset when that text "
        f"appears more than once); no line: the text has no entity. Types: {types}."
    )
    return ReviewEdit("edit", "\n".join(lines), hint)


def line_of(text: str, span: Span) -> str:
    surface = text[span.start : span.end]
    where = f" @{span.start}" if text.count(surface) > 1 else ""
    return f"{span.label}: {surface}{where}"


def spans_event(shown: Shown, edited: str) -> dict[str, Any]:
    """A `correction` whose output is the span set the lines describe."""
    text = text_of(shown[0])
    if text is None:
        raise Invalid("the interaction's input holds no text to mark spans in", field="text")
    spans: list[dict[str, Any]] = []
    searched_from: dict[str, int] = {}
    for number, line in enumerate(edited.splitlines(), start=1):
        if not line.strip():
            continue
        label, colon, rest = line.partition(":")
        if not colon or not label.strip() or not rest.strip():
            example = "write TYPE: text, e.g. 'PER: Ada Lovelace'"
            raise Invalid(f"line {number}: {example}", field="text")
        surface, start = _locate(text, rest.strip(), searched_from, number)
        searched_from[surface] = start + len(surface)
        spans.append({"start": start, "end": start + len(surface), "label": label.strip()})
    return {"kind": "correction", "output": {"spans": sorted(spans, key=lambda s: s["start"])}}


def _locate(text: str, written: str, searched_from: dict[str, int], number: int) -> tuple[str, int]:
    """(the span's text, its start) for one line's text, with or without `@offset`."""
    pinned = _OFFSET.match(written)
    if pinned is not None:
        surface, start = pinned["surface"], int(pinned["offset"])
        if not surface or text[start : start + len(surface)] != surface:
            raise Invalid(f"line {number}: {surface!r} is not at offset {start}", field="text")
        return surface, start
    start = text.find(written, searched_from.get(written, 0))
    if start < 0:
        where = "that many times in" if written in searched_from else "in"
        raise Invalid(f"line {number}: {written!r} is not {where} the text", field="text")
    return written, start
