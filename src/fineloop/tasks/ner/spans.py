"""Entity spans as NER feedback carries them, and how a correction turns what was shown
into the right span set.

Shapes (the README documents them):
- an interaction's input is `{"text": str}` (optionally `"document": str`, the unit the
  split keeps together) or the text itself; its output is `{"spans": [Span, ...]}`;
- a `label` event gives the full correct span set of a text: `spans` (may be empty: the
  text has no entity);
- a `correction` event on an interaction gives either the full set, `output: {"spans":
  [...]}`, or edits of what was shown, `output: {"edits": [...]}`, each one of
  `{"op": "delete", "start", "end"}`, `{"op": "add", "start", "end", "label"}`,
  `{"op": "relabel", "start", "end", "label"}` (change the type) and
  `{"op": "move", "start", "end", "new_start", "new_end"}` (fix a boundary).
  An edit names a shown span by its offsets; one that names no shown span is refused.
Spans are character offsets, `end` exclusive, and never overlap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, model_validator

from fineloop.data.hashing import content_hash
from fineloop.errors import error_message, field_path
from fineloop.validation import INPUT, Int64

MAX_TEXT_CHARS = 100_000
MAX_SPANS = 10_000


@dataclass(frozen=True, order=True)
class Span:
    start: int
    end: int
    label: str

    def as_dict(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "label": self.label}


class SpanIn(BaseModel):
    model_config = INPUT

    start: Int64 = Field(ge=0)
    end: Int64 = Field(gt=0)
    label: str = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _ordered(self) -> SpanIn:
        if self.end <= self.start:
            raise ValueError("span end must be greater than start")
        return self


class _Edit(BaseModel):
    model_config = INPUT

    start: Int64 = Field(ge=0, description="Start of the shown span the edit is about.")
    end: Int64 = Field(gt=0, description="End of the shown span (or of the added one).")


class DeleteEdit(_Edit):
    op: Literal["delete"]


class AddEdit(_Edit):
    op: Literal["add"]
    label: str = Field(min_length=1, max_length=64)


class RelabelEdit(_Edit):
    op: Literal["relabel"]
    label: str = Field(min_length=1, max_length=64)


class MoveEdit(_Edit):
    op: Literal["move"]
    new_start: Int64 = Field(ge=0)
    new_end: Int64 = Field(gt=0)


Edit = Annotated[DeleteEdit | AddEdit | RelabelEdit | MoveEdit, Field(discriminator="op")]


class CorrectionOutput(BaseModel):
    """A correction's `output`: the full span set, or edits of what was shown."""

    model_config = INPUT

    spans: list[SpanIn] | None = Field(default=None, max_length=MAX_SPANS)
    edits: list[Edit] | None = Field(default=None, min_length=1, max_length=MAX_SPANS)

    @model_validator(mode="after")
    def _one(self) -> CorrectionOutput:
        if (self.spans is None) == (self.edits is None):
            raise ValueError("a NER correction's output needs exactly one of spans or edits")
        return self


_CORRECTION = TypeAdapter(CorrectionOutput)


def text_of(value: Any) -> str | None:
    """The text an input carries: `{"text": str}` or a bare string."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return str(value["text"])
    return None


def document_of(value: Any, text: str) -> str:
    """The split unit of an input: its `document` if given, else the text's hash."""
    if isinstance(value, dict) and isinstance(value.get("document"), str) and value["document"]:
        return str(value["document"])
    return content_hash(text)


def spans_of(output: Any) -> list[Span]:
    """The spans an output holds (`{"spans": [...]}`), skipping malformed entries: what
    the model showed was written by us, but an imported interaction may hold anything."""
    raw = output.get("spans") if isinstance(output, dict) else None
    found: list[Span] = []
    for entry in raw if isinstance(raw, list) else []:
        if not isinstance(entry, dict):
            continue
        start, end, label = entry.get("start"), entry.get("end"), entry.get("label")
        if type(start) is int and type(end) is int and isinstance(label, str) and end > start:
            found.append(Span(start, end, label))
    return sorted(found)


def parse_spans(raw: Iterable[Any]) -> list[Span]:
    """Validated spans from a label event's `spans` (already pydantic-checked there)."""
    spans = [SpanIn.model_validate(s) if isinstance(s, dict) else s for s in raw]
    return sorted(Span(s.start, s.end, s.label) for s in spans)


def check_spans(
    spans: Sequence[Span], text: str | None, types: Sequence[str], field: str = "spans"
) -> list[tuple[str, str]]:
    """Problems with a span set for one text: undeclared types, offsets past the text,
    overlaps, a span that is only whitespace."""
    problems: list[tuple[str, str]] = []
    declared = set(types)
    for index, span in enumerate(spans):
        where = f"{field}.{index}"
        if span.label not in declared:
            known = ", ".join(types)
            problems.append((f"{where}.label", f"{span.label!r} is not one of: {known}"))
        if text is not None and span.end > len(text):
            problems.append(
                (f"{where}.end", f"{span.end} is past the text's end ({len(text)} characters)")
            )
        elif text is not None and not text[span.start : span.end].strip():
            problems.append((where, "the span covers only whitespace"))
    ordered = sorted(spans)
    for before, after in pairwise(ordered):
        if after.start < before.end:
            problems.append(
                (
                    field,
                    f"spans overlap: {before.start}-{before.end} and {after.start}-{after.end}",
                )
            )
            break
    return problems


def parse_correction(output: Any) -> CorrectionOutput | list[tuple[str, str]]:
    """A correction's output, or the problems with it as (field, message) pairs."""
    try:
        return _CORRECTION.validate_python(output)
    except ValidationError as error:
        return [
            (
                "output." + field_path(e["loc"], e["type"]) if e["loc"] else "output",
                error_message(e),
            )
            for e in error.errors()[:5]
        ]


def resolve(shown: Sequence[Span], correction: CorrectionOutput) -> list[Span]:
    """The right span set: the correction's own, or `shown` with its edits applied in
    order. Raises ValueError naming the edit when it names no shown span."""
    if correction.spans is not None:
        return sorted(Span(s.start, s.end, s.label) for s in correction.spans)
    current = {(s.start, s.end): s for s in shown}
    for index, edit in enumerate(correction.edits or []):
        key = (edit.start, edit.end)
        if isinstance(edit, AddEdit):
            current[key] = Span(edit.start, edit.end, edit.label)
            continue
        if key not in current:
            raise ValueError(
                f"edits.{index}: no span {edit.start}-{edit.end} was shown "
                f"(shown: {', '.join(f'{s.start}-{s.end}' for s in shown) or 'none'})"
            )
        span = current.pop(key)
        if isinstance(edit, RelabelEdit):
            current[key] = Span(span.start, span.end, edit.label)
        elif isinstance(edit, MoveEdit):
            if edit.new_end <= edit.new_start:
                raise ValueError(f"edits.{index}: new_end must be greater than new_start")
            current[(edit.new_start, edit.new_end)] = Span(edit.new_start, edit.new_end, span.label)
    return sorted(current.values())


def corrected_spans(shown_output: Any, output: Any) -> list[Span]:
    """`resolve` from raw JSON; raises ValueError with what is wrong."""
    parsed = parse_correction(output)
    if isinstance(parsed, list):
        raise ValueError("; ".join(f"{f}: {m}" for f, m in parsed))
    return resolve(spans_of(shown_output), parsed)
