"""NER import formats: CoNLL (read on the real WNUT-17 dev file) and spans JSONL → label
events, idempotent keys, errors that name the line."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from fineloop.errors import BadFile, BatchRejected
from fineloop.feedback.events import EventEnvelope, LabelEvent
from fineloop.schemas import ProjectCreate
from fineloop.store import Store
from fineloop.store.projects import create_project
from fineloop.tasks.ner.imports import CONVERTERS, _read_conll
from fineloop.tasks.ner.task import NerTask
from fineloop.transfer.service import import_file

DATASETS = Path(
    os.environ.get("FINELOOP_TEST_DATASETS")
    or Path(__file__).resolve().parents[3] / "shared" / "datasets"
)
WNUT = DATASETS / "wnut17"
WNUT_DEV = WNUT / "emerging.dev.conll"


def labels(events: list[EventEnvelope]) -> list[LabelEvent]:
    assert all(isinstance(e, LabelEvent) for e in events)
    return [e for e in events if isinstance(e, LabelEvent)]


def conll(text: str) -> list[LabelEvent]:
    interactions, events = CONVERTERS["conll"](text.encode())
    assert interactions == []
    return labels(events)


def surface(event: LabelEvent) -> list[tuple[str, str]]:
    assert isinstance(event.input, dict)
    text = event.input["text"]
    return [(text[s.start : s.end], s.label) for s in event.spans or []]


def _blocks(raw: str) -> list[list[list[str]]]:
    """The file's sentences read independently: blocks between blank or whitespace-only
    lines, each line split into its columns."""
    blocks = re.split(r"\n[ \t]*(?:\n|$)", raw)
    return [[line.split("\t") for line in block.split("\n")] for block in blocks if block.strip()]


def _entities(block: list[list[str]]) -> tuple[tuple[str, str], ...]:
    """The tagged entities as (tokens joined by spaces, type), read independently."""
    found: list[tuple[list[str], str]] = []
    open_type = None
    for token, tag in block:
        kind = tag[2:] if tag != "O" else None
        if kind is not None and (tag.startswith("B-") or kind != open_type):
            found.append(([token], kind))
        elif kind is not None:
            found[-1][0].append(token)
        open_type = kind
    return tuple((" ".join(tokens), kind) for tokens, kind in found)


@pytest.mark.skipif(not WNUT_DEV.exists(), reason="the shared WNUT-17 data is not here")
def test_wnut17_dev_reads_one_label_per_sentence_with_the_tagged_tokens() -> None:
    raw = WNUT_DEV.read_bytes()
    blocks = _blocks(raw.decode())
    assert len(blocks) == 1009  # SOURCE.md's count
    assert len(_read_conll(raw)) == len(blocks)
    events = conll(raw.decode())
    # Repeated sentences (same text, same spans) are one event: their keys are equal.
    distinct = {(" ".join(t for t, _ in b), _entities(b)) for b in blocks}
    assert len(events) == len(distinct)
    got = set()
    for event in events:
        assert isinstance(event.input, dict) and "document" not in event.input
        got.add((event.input["text"], tuple(surface(event))))
    assert got == distinct
    assert sum(len(e.spans or []) for e in events) > 800
    assert {s.label for e in events for s in e.spans or []} == {
        "person",
        "location",
        "group",
        "creative-work",
        "corporation",
        "product",
    }


@pytest.mark.skipif(not WNUT_DEV.exists(), reason="the shared WNUT-17 data is not here")
def test_wnut17_train_breaks_sentences_on_its_tab_only_lines() -> None:
    raw = (WNUT / "wnut17train.conll").read_bytes()
    assert b"\n\t\n" in raw  # 2394 of its separators are a lone tab
    assert len(_read_conll(raw)) == 3394  # SOURCE.md's count


def test_whitespace_only_lines_separate_sentences_and_iob1_starts_spans() -> None:
    events = conll(
        "Pump\tI-EQUIPMENT\n3\tI-EQUIPMENT\nat\tO\n40\tI-MEASURE\n \t\n"
        "valve\tB-EQUIPMENT\nbar\tI-MEASURE\nshut\tO\n\n\n"
    )
    assert [surface(e) for e in events] == [
        [("Pump 3", "EQUIPMENT"), ("40", "MEASURE")],
        # An I- of another type starts a span of its own (documented choice).
        [("valve", "EQUIPMENT"), ("bar", "MEASURE")],
    ]


def test_docstart_sections_share_a_document_and_the_tag_is_the_last_column() -> None:
    events = conll(
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
        "Peter NNP B-NP B-PER\n\n-DOCSTART- -X- -X- O\n\nBonn NNP B-NP B-LOC\n"
    )
    documents = [e.input["document"] for e in events if isinstance(e.input, dict)]
    assert len(documents) == 3 and documents[0] == documents[1] != documents[2]
    assert [surface(e) for e in events] == [[("EU", "ORG")], [("Peter", "PER")], [("Bonn", "LOC")]]


def test_importing_again_gives_the_same_keys_and_repeats_collapse() -> None:
    text = "pump\tB-EQUIPMENT\nok\tO\n\npump\tB-EQUIPMENT\nok\tO\n\nquiet\tO\n"
    first, again = conll(text), conll(text)
    assert len(first) == 2  # the repeated sentence is one event
    assert [e.idempotency_key for e in first] == [e.idempotency_key for e in again]
    assert first[1].spans == [] and first[0].metadata == {"source": "import"}
    same_in_jsonl = CONVERTERS["spans-jsonl"](
        json.dumps(
            {"text": "pump ok", "spans": [{"start": 0, "end": 4, "label": "EQUIPMENT"}]}
        ).encode()
    )[1]
    assert same_in_jsonl[0].idempotency_key == first[0].idempotency_key


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("pump\tB-EQUIPMENT\n\nvalve\tX-EQUIPMENT\n", 3, "'X-EQUIPMENT'"),
        ("pump\tB-EQUIPMENT\nvalve\n", 2, "token and its tag"),
        ("pump\tB-EQUIP MENT\n", 1, "'MENT'"),
        ("pump\tB-9LIVES\n", 1, "entity type '9LIVES'"),
    ],
)
def test_a_malformed_conll_line_is_named(text: str, line: int, words: str) -> None:
    with pytest.raises(BadFile) as error:
        conll(text)
    assert error.value.line == line and error.value.message.startswith(f"line {line}: ")
    assert words in error.value.message


def test_bytes_that_are_not_utf8_name_their_line() -> None:
    with pytest.raises(BadFile) as error:
        CONVERTERS["conll"](b"pump\tO\n\xff\xfe\tO\n")
    assert error.value.line == 2 and "UTF-8" in error.value.message


def jsonl(*rows: Any) -> list[LabelEvent]:
    data = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode()
    return labels(CONVERTERS["spans-jsonl"](data)[1])


def test_spans_jsonl_lines_become_labels() -> None:
    events = jsonl(
        {
            "text": "pump 3 at 40 bar",
            "spans": [
                {"start": 10, "end": 16, "label": "MEASURE"},
                {"start": 0, "end": 6, "label": "EQUIPMENT"},
            ],
            "document": "log-7",
        },
        "",
        {"text": "all quiet", "spans": []},
    )
    assert [surface(e) for e in events] == [[("pump 3", "EQUIPMENT"), ("40 bar", "MEASURE")], []]
    assert events[0].input == {"text": "pump 3 at 40 bar", "document": "log-7"}


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"text": "pump", "spans": [{"start": 0, "end": 9, "label": "X"}]}, "past the text's end"),
        (
            {
                "text": "pump 3",
                "spans": [
                    {"start": 0, "end": 4, "label": "X"},
                    {"start": 2, "end": 6, "label": "Y"},
                ],
            },
            "overlap",
        ),
        ({"text": "pump", "spans": [{"start": 0, "end": True, "label": "X"}]}, "integers"),
        ({"text": "pump", "spans": [], "lang": "en"}, "unknown key 'lang'"),
        ({"text": "pump"}, "spans must be a list"),
        ("{not json", "not valid JSON"),
    ],
)
def test_a_bad_spans_jsonl_line_is_named(bad: Any, words: str) -> None:
    with pytest.raises(BadFile) as error:
        jsonl({"text": "fine", "spans": []}, bad)
    assert error.value.line == 2 and words in error.value.message


def test_the_task_offers_both_formats() -> None:
    assert set(NerTask().converters()) == {"conll", "spans-jsonl"}


def test_an_imported_file_lands_once_and_undeclared_types_are_named(store: Store) -> None:
    with store.write() as session:
        spec = ProjectCreate(name="plant", task="ner", task_options={"entity_types": ["EQUIPMENT"]})
        create_project(session, spec)
    data = b"pump\tB-EQUIPMENT\n3\tI-EQUIPMENT\nok\tO\n\nall\tO\nquiet\tO\n"
    first = import_file(store, "plant", "feedback", data, "conll")
    assert [(r.resource, r.created) for r in first] == [("interactions", 0), ("feedback", 2)]
    again = import_file(store, "plant", "feedback", data, "conll")
    assert again[1].created == 0 and again[1].duplicates == 2
    with pytest.raises(BatchRejected) as error:
        import_file(store, "plant", "feedback", b"40\tB-MEASURE\nbar\tI-MEASURE\n", "conll")
    assert "'MEASURE' is not one of: EQUIPMENT" in str(error.value.body())
