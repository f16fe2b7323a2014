"""What a NER project accepts as feedback, checked at ingest so a bad span is a 422 naming
the field to fix, never a row the builder has to drop later.

- `label`: the full span set of a text (`spans`, possibly empty: no entity in the text);
  the text is the event's `input`, else its interaction's.
- `correction`: `output.spans` (the full set) or `output.edits` of what the interaction
  showed; edits need the interaction. The resolved set is checked like a label's.
- `thumb`, `rating`: accepted and kept (dashboards, triggers) but they train nothing.
- `selection`, `preference`: refused; they have no meaning for spans.
"""

from __future__ import annotations

import re
from typing import Any

from fineloop.feedback.events import (
    CorrectionEvent,
    EventEnvelope,
    LabelEvent,
    PreferenceEvent,
    SelectionEvent,
)
from fineloop.tasks.base import Shown
from fineloop.tasks.ner.options import NerOptions
from fineloop.tasks.ner.spans import (
    MAX_TEXT_CHARS,
    AddEdit,
    CorrectionOutput,
    MoveEdit,
    RelabelEdit,
    Span,
    check_spans,
    parse_correction,
    parse_spans,
    resolve,
    spans_of,
    text_of,
)

Problems = list[tuple[str, str]]
_INPUT_SHAPE = 'a NER input is {"text": "..."} (optionally with "document") or the text itself'
_EDIT_ERROR = re.compile(r"^edits\.(\d+): (.*)$", re.DOTALL)


def check_event(options: NerOptions, event: EventEnvelope, shown: Shown | None) -> Problems:
    """Problems with one event of a NER project, as (field, message) pairs."""
    if isinstance(event, SelectionEvent | PreferenceEvent):
        return [
            (
                "kind",
                f"a NER project takes label and correction events (thumbs and ratings are "
                f"kept but do not train), not {event.kind}s: send the right spans as a label, "
                "or correct the interaction's output",
            )
        ]
    if isinstance(event, LabelEvent):
        return _check_label(options, event, shown)
    if isinstance(event, CorrectionEvent):
        return _check_correction(options, event, shown)
    return []  # thumb, rating


def _check_label(options: NerOptions, event: LabelEvent, shown: Shown | None) -> Problems:
    problems: Problems = []
    if event.label is not None or event.items is not None:
        extra = "label" if event.label is not None else "items"
        problems.append((extra, f"a NER label carries spans only; remove {extra}"))
    if event.spans is None:
        problems.append(
            ("spans", "a NER label needs spans: the text's entities ([] when it has none)")
        )
    text, problems_text = _text(event, shown)
    problems += problems_text
    if problems or text is None or event.spans is None:
        return problems
    return check_spans(parse_spans(event.spans), text, options.entity_types, "spans")


def _check_correction(options: NerOptions, event: CorrectionEvent, shown: Shown | None) -> Problems:
    parsed = parse_correction(event.output)
    if isinstance(parsed, list):
        return parsed
    if parsed.edits is not None and shown is None:
        return [
            (
                "interaction_id",
                "edits change what an interaction showed: give its interaction_id, or send "
                "the full span set as output.spans",
            )
        ]
    text, problems = _text(event, shown)
    if problems or text is None:
        return problems
    if parsed.edits is None:
        full = parse_spans(parsed.spans or [])
        return check_spans(full, text, options.entity_types, "output.spans")
    assert shown is not None
    return _check_edits(options, parsed, spans_of(shown[1]), text)


def _check_edits(
    options: NerOptions, parsed: CorrectionOutput, shown: list[Span], text: str
) -> Problems:
    """Edits resolved against what was shown; a problem names the edit that made the bad
    span, or says which shown span the edits left as it was."""
    try:
        resolved = resolve(shown, parsed)
    except ValueError as error:
        match = _EDIT_ERROR.match(str(error))
        if match is None:
            return [("output.edits", str(error))]
        return [(f"output.edits.{match[1]}", match[2])]
    made_by = _edit_of_span(parsed)
    problems: Problems = []
    for span in resolved:
        for field, message in check_spans([span], text, options.entity_types, "span"):
            suffix = field.removeprefix("span.0")
            edit = made_by.get((span.start, span.end))
            if edit is None:
                where = f"the shown span {span.start}-{span.end} ({span.label}), kept by the edits"
                problems.append(("output.edits", f"{where}: {message}; relabel, move or delete it"))
            else:
                problems.append((f"output.edits.{edit}{suffix}", message))
    # check_spans names an overlap by the whole set's field; the per-span ones came above.
    whole = check_spans(resolved, text, options.entity_types, "output.edits")
    return problems + [p for p in whole if p[0] == "output.edits"]


def _edit_of_span(parsed: CorrectionOutput) -> dict[tuple[int, int], int]:
    """The last edit that put a span at each (start, end)."""
    made: dict[tuple[int, int], int] = {}
    for index, edit in enumerate(parsed.edits or []):
        if isinstance(edit, MoveEdit):
            made[(edit.new_start, edit.new_end)] = index
        elif isinstance(edit, AddEdit | RelabelEdit):
            made[(edit.start, edit.end)] = index
    return made


def _text(event: EventEnvelope, shown: Shown | None) -> tuple[str | None, Problems]:
    """The text the event is about, and what is wrong with it (named where it came from:
    the event's input, else its interaction's)."""
    if event.input is not None:
        value: Any = event.input
        where = "input"
    elif shown is not None:
        value, where = shown[0], "interaction_id"
    else:
        return None, [("input", 'give the text: input {"text": ...}, or an interaction_id')]
    text = text_of(value)
    if text is None:
        message = _INPUT_SHAPE
        if where != "input":
            message = f"the interaction's input has no text; {_INPUT_SHAPE}"
        return None, [(where, message)]
    problems: Problems = []
    if not text.strip():
        problems.append((where, "the text is empty"))
    if len(text) > MAX_TEXT_CHARS:
        problems.append((where, f"the text has {len(text)} characters; at most {MAX_TEXT_CHARS}"))
    document = value.get("document") if isinstance(value, dict) else None
    if document is not None and not isinstance(document, str):
        problems.append((f"{where}.document", "document must be a string (the document's id)"))
    return text, problems
