"""Texts with their spans as segments a template renders (escaped, a colour per entity
type), and what a correction changed in a span set.

The page never builds HTML from user text: a segment is plain text plus the type and colour
it is marked with, and the template escapes the text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from fineloop.tasks.ner.spans import Span

TEXT_CHARS = 4000  # longer texts are cut; spans past the cut are not shown
# Soft backgrounds that keep dark text readable, one per declared type in order.
PALETTE = (
    "#bfdbfe",
    "#fde68a",
    "#bbf7d0",
    "#fbcfe8",
    "#ddd6fe",
    "#fed7aa",
    "#a5f3fc",
    "#d9f99d",
    "#fecaca",
    "#c7d2fe",
    "#99f6e4",
    "#f5d0fe",
)
UNDECLARED = "#e5e7eb"  # a type the project does not declare (an imported label, say)


class Segment(TypedDict):
    text: str
    label: str | None  # the entity type when the text is a span
    colour: str | None


class Change(TypedDict):
    op: str  # "added", "removed", "relabelled" or "moved"
    text: str  # the span's text after the change (before, for a removed span)
    label: str
    old_text: str | None  # a moved span's text before
    old_label: str | None  # a relabelled (or moved and relabelled) span's type before


def entity_types(options: Mapping[str, Any] | None) -> list[str]:
    """The project's declared types, in order (nothing for malformed options)."""
    found = (options or {}).get("entity_types")
    return [t for t in found if isinstance(t, str)] if isinstance(found, list) else []


def colours(types: Sequence[str]) -> dict[str, str]:
    return {name: PALETTE[index % len(PALETTE)] for index, name in enumerate(types)}


def legend(palette: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"label": name, "colour": colour} for name, colour in palette.items()]


def segments(text: str, spans: Sequence[Span], palette: Mapping[str, str]) -> list[Segment]:
    """`text` cut into plain and marked parts; spans past the text's end (or the cut) are
    trimmed or dropped, and one overlapping an earlier span is skipped."""
    shown = text[:TEXT_CHARS]
    found: list[Segment] = []
    at = 0
    for span in sorted(spans):
        start, end = span.start, min(span.end, len(shown))
        if start < at or start >= end:
            continue
        if start > at:
            found.append({"text": shown[at:start], "label": None, "colour": None})
        colour = palette.get(span.label, UNDECLARED)
        found.append({"text": shown[start:end], "label": span.label, "colour": colour})
        at = end
    if at < len(shown):
        found.append({"text": shown[at:], "label": None, "colour": None})
    if len(text) > len(shown):
        found.append({"text": " …", "label": None, "colour": None})
    return found


def changes(text: str, shown: Sequence[Span], corrected: Sequence[Span]) -> list[Change]:
    """What turns `shown` into `corrected`: spans at the same offsets with another type are
    relabelled, a new span overlapping a dropped one is that span moved, the rest were
    removed or added. In text order."""
    before = {(s.start, s.end): s for s in shown}
    after = {(s.start, s.end): s for s in corrected}
    found: list[tuple[int, Change]] = []
    for key in sorted(before.keys() & after.keys()):
        old, new = before[key], after[key]
        if old.label != new.label:
            found.append((new.start, _change("relabelled", text, new, old_label=old.label)))
    gone = sorted(s for k, s in before.items() if k not in after)
    new_spans = sorted(s for k, s in after.items() if k not in before)
    for old in gone:
        partner = next((n for n in new_spans if n.start < old.end and old.start < n.end), None)
        if partner is None:
            found.append((old.start, _change("removed", text, old)))
            continue
        new_spans.remove(partner)
        relabelled = old.label if old.label != partner.label else None
        moved = _change("moved", text, partner, old_label=relabelled)
        moved["old_text"] = text[old.start : old.end]
        found.append((partner.start, moved))
    found += [(span.start, _change("added", text, span)) for span in new_spans]
    return [change for _, change in sorted(found, key=lambda pair: pair[0])]


def _change(op: str, text: str, span: Span, old_label: str | None = None) -> Change:
    return {
        "op": op,
        "text": text[span.start : span.end],
        "label": span.label,
        "old_text": None,
        "old_label": old_label,
    }
