"""What a NER project accepts at ingest: `feedback.check_event` on label, correction and the
other kinds, each problem named by the field the user has to fix."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from fineloop.feedback.events import EventEnvelope, FeedbackEvent
from fineloop.tasks.ner.feedback import check_event
from fineloop.tasks.ner.options import NerOptions
from fineloop.tasks.ner.task import NerTask

OPTIONS = NerOptions(entity_types=["EQUIPMENT", "MEASURE"])
TEXT = "pump 3 runs at 40 bar today"  # pump 3: 0-6, 40 bar: 15-21, today: 22-27
SHOWN = (
    {"text": TEXT},
    {
        "spans": [
            {"start": 0, "end": 4, "label": "EQUIPMENT"},
            {"start": 15, "end": 21, "label": "MEASURE"},
        ]
    },
)
_EVENT = TypeAdapter[EventEnvelope](FeedbackEvent)


def event(**raw: Any) -> EventEnvelope:
    return _EVENT.validate_python(raw)


def span(start: int, end: int, label: str) -> dict[str, Any]:
    return {"start": start, "end": end, "label": label}


def label(*spans: dict[str, Any], text: str | None = TEXT) -> EventEnvelope:
    return event(kind="label", input=None if text is None else {"text": text}, spans=list(spans))


def edits(*ops: dict[str, Any]) -> EventEnvelope:
    return event(kind="correction", interaction_id="i1", output={"edits": list(ops)})


def test_a_label_with_right_spans_or_none_at_all_passes() -> None:
    assert check_event(OPTIONS, label(span(0, 6, "EQUIPMENT"), span(15, 21, "MEASURE")), None) == []
    # An empty list is an answer: the text has no entity (the envelope accepts it too).
    assert check_event(OPTIONS, label(), None) == []
    with pytest.raises(ValidationError, match="label, spans or items"):
        event(kind="label", input={"text": TEXT})


def test_a_label_names_the_undeclared_type_and_the_declared_ones() -> None:
    problems = check_event(OPTIONS, label(span(0, 6, "EQUIPMENT"), span(15, 21, "PRESSURE")), None)
    assert problems == [("spans.1.label", "'PRESSURE' is not one of: EQUIPMENT, MEASURE")]


def test_a_label_refuses_overlapping_and_out_of_range_spans() -> None:
    overlap = check_event(OPTIONS, label(span(0, 6, "EQUIPMENT"), span(5, 9, "MEASURE")), None)
    assert overlap == [("spans", "spans overlap: 0-6 and 5-9")]
    past = check_event(OPTIONS, label(span(22, 30, "MEASURE")), None)
    assert past == [("spans.0.end", "30 is past the text's end (27 characters)")]


def test_a_label_takes_its_text_from_the_interaction_or_asks_for_one() -> None:
    anchored = event(kind="label", interaction_id="i1", spans=[span(22, 30, "MEASURE")])
    assert check_event(OPTIONS, anchored, SHOWN) == [
        ("spans.0.end", "30 is past the text's end (27 characters)")
    ]
    ((field, message),) = check_event(OPTIONS, label(span(0, 4, "EQUIPMENT"), text=None), None)
    assert field == "input" and "text" in message
    not_text = event(kind="label", input={"query": TEXT}, spans=[])
    assert check_event(OPTIONS, not_text, None)[0][0] == "input"


def test_a_label_without_spans_or_with_a_class_label_is_refused() -> None:
    problems = check_event(OPTIONS, event(kind="label", input=TEXT, label="urgent"), None)
    assert ("label", "a NER label carries spans only; remove label") in problems
    assert any(field == "spans" and "[] when it has none" in msg for field, msg in problems)


def test_a_full_span_set_correction_is_checked_like_a_label() -> None:
    ok = event(kind="correction", interaction_id="i1", output={"spans": [span(0, 6, "EQUIPMENT")]})
    assert check_event(OPTIONS, ok, SHOWN) == []
    bad = event(kind="correction", input=TEXT, output={"spans": [span(0, 6, "PUMP")]})
    assert check_event(OPTIONS, bad, None) == [
        ("output.spans.0.label", "'PUMP' is not one of: EQUIPMENT, MEASURE")
    ]
    shapeless = event(kind="correction", input=TEXT, output={"text": "pump"})
    assert check_event(OPTIONS, shapeless, None)[0][0].startswith("output")


def test_edits_of_every_kind_resolve_against_what_was_shown() -> None:
    fixed = edits(
        {"op": "move", "start": 0, "end": 4, "new_start": 0, "new_end": 6},
        {"op": "relabel", "start": 15, "end": 21, "label": "EQUIPMENT"},
        {"op": "add", "start": 22, "end": 27, "label": "MEASURE"},
        {"op": "delete", "start": 22, "end": 27},
    )
    assert check_event(OPTIONS, fixed, SHOWN) == []


def test_edits_need_the_interaction_they_change() -> None:
    loose = event(
        kind="correction", input=TEXT, output={"edits": [{"op": "delete", "start": 0, "end": 4}]}
    )
    ((field, message),) = check_event(OPTIONS, loose, None)
    assert field == "interaction_id" and "output.spans" in message


def test_an_edit_naming_no_shown_span_is_refused_by_its_index() -> None:
    wrong = edits(
        {"op": "delete", "start": 0, "end": 4},
        {"op": "relabel", "start": 0, "end": 6, "label": "MEASURE"},
    )
    assert check_event(OPTIONS, wrong, SHOWN) == [
        ("output.edits.1", "no span 0-6 was shown (shown: 0-4, 15-21)")
    ]


def test_an_edit_that_makes_a_bad_span_is_named() -> None:
    relabel = edits({"op": "relabel", "start": 15, "end": 21, "label": "PRESSURE"})
    assert check_event(OPTIONS, relabel, SHOWN) == [
        ("output.edits.0.label", "'PRESSURE' is not one of: EQUIPMENT, MEASURE")
    ]
    past = edits({"op": "add", "start": 22, "end": 40, "label": "MEASURE"})
    assert check_event(OPTIONS, past, SHOWN) == [
        ("output.edits.0.end", "40 is past the text's end (27 characters)")
    ]
    overlap = edits({"op": "add", "start": 2, "end": 6, "label": "MEASURE"})
    assert check_event(OPTIONS, overlap, SHOWN) == [("output.edits", "spans overlap: 0-4 and 2-6")]


def test_a_shown_span_of_a_removed_type_must_be_fixed_too() -> None:
    narrower = NerOptions(entity_types=["EQUIPMENT"])
    ((field, message),) = check_event(
        narrower, edits({"op": "delete", "start": 0, "end": 4}), SHOWN
    )
    assert field == "output.edits"
    assert "shown span 15-21 (MEASURE)" in message and "delete it" in message


def test_thumbs_and_ratings_pass_selections_and_preferences_do_not() -> None:
    assert check_event(OPTIONS, event(kind="thumb", interaction_id="i1", value="down"), SHOWN) == []
    assert check_event(OPTIONS, event(kind="rating", interaction_id="i1", value=2.0), SHOWN) == []
    picked = event(kind="selection", interaction_id="i1", selected=["a"])
    pair = event(
        kind="preference",
        input=TEXT,
        chosen={"spans": []},
        rejected={"spans": [span(0, 4, "EQUIPMENT")]},
    )
    for refused in (picked, pair):
        ((field, message),) = check_event(OPTIONS, refused, SHOWN)
        assert field == "kind" and "label and correction" in message


def test_the_task_checks_feedback_with_the_projects_stored_options() -> None:
    stored = NerTask().options({"entity_types": ["EQUIPMENT"]})
    problems = NerTask().check_feedback(stored, label(span(15, 21, "MEASURE")), None)
    assert problems == [("spans.0.label", "'MEASURE' is not one of: EQUIPMENT")]
