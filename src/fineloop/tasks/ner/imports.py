"""NER files → label events: a cold start for a project from data a team already has.

Two formats (`fineloop data import --format conll|spans-jsonl`); each text becomes a label
event with input `{"text": ..., "document": ...}` and its spans, metadata
`{"source": "import"}`, and an idempotency key hashed from input and spans, so importing a
file again (or a repeated sentence) stores nothing new. No interactions are made.

- `conll`: one token per line, its tag in the LAST whitespace-separated column (so both
  `token TAG` and CoNLL-2003's `token POS CHUNK TAG` read). A blank or whitespace-only line
  ends a sentence; a sentence's text is its tokens joined by single spaces and the spans
  are character offsets in that text. Tags: `O`, `B-T`/`I-T` (IOB2); also IOB1 (an `I-`
  that follows no span of its type starts one: an `I-T` after `O` or after another type
  starts a new span, never an error) and BIOES/BILOU (`S-`/`U-` start, `E-`/`L-`
  continue). A `-DOCSTART-` line starts a new document: the sentences up to the next one
  share `document` (a hash of their texts), so the split keeps them together; without
  it, each sentence is its own document.
- `spans-jsonl`: one JSON object per line, `{"text": str, "spans": [{"start", "end",
  "label"}], "document"?: str}`.

Types come from the file; ingest then refuses any the project does not declare, naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter, ValidationError

from fineloop.data.hashing import content_hash
from fineloop.errors import BadFile
from fineloop.feedback.events import EventEnvelope, FeedbackEvent
from fineloop.schemas import InteractionCreate
from fineloop.tasks.base import Converter
from fineloop.tasks.ner.options import EntityType
from fineloop.tasks.ner.spans import MAX_TEXT_CHARS, Span, check_spans
from fineloop.transfer.formats import check_text, json_line

_EVENT = TypeAdapter[EventEnvelope](FeedbackEvent)
_TYPE = TypeAdapter[str](EntityType)
_SOURCE = {"source": "import"}
_COLUMNS = re.compile(r"[ \t]+")  # ASCII only: a token may hold other Unicode spaces
_TAG = re.compile(r"^([BIESLU])-(.+)$")
_STARTS, _CONTINUES = frozenset("BSU"), frozenset("IEL")
DOCSTART = "-DOCSTART-"
_JSONL_SHAPE = 'each line needs {"text": str, "spans": [{"start", "end", "label"}]}'


@dataclass
class _Sentence:
    line: int  # of its first token
    tokens: list[str] = field(default_factory=list)
    tags: list[tuple[str, str | None]] = field(default_factory=list)  # (prefix, type)
    document: int | None = None  # index of its -DOCSTART- section


def convert_conll(data: bytes) -> tuple[list[InteractionCreate], list[EventEnvelope]]:
    sentences = _read_conll(data)
    documents: dict[int, list[str]] = {}
    for sentence in sentences:
        if sentence.document is not None:
            documents.setdefault(sentence.document, []).append(" ".join(sentence.tokens))
    names = {index: "conll-" + content_hash(texts)[:24] for index, texts in documents.items()}
    events: dict[str, EventEnvelope] = {}
    for sentence in sentences:
        text, spans = _joined(sentence)
        if len(text) > MAX_TEXT_CHARS:
            raise BadFile(
                sentence.line,
                f"the sentence starting here has {len(text)} characters; at most "
                f"{MAX_TEXT_CHARS} (is a blank line missing between sentences?)",
            )
        document = names.get(sentence.document) if sentence.document is not None else None
        event = _label(text, spans, document)
        events.setdefault(event.idempotency_key or "", event)
    return [], list(events.values())


def _read_conll(data: bytes) -> list[_Sentence]:
    """The file's sentences, each token's tag split into prefix and type."""
    sentences: list[_Sentence] = []
    current: _Sentence | None = None
    document: int | None = None
    for number, raw in enumerate(data.splitlines(), start=1):
        line = raw.decode("utf-8-sig" if number == 1 else "utf-8", "surrogateescape")
        check_text(number, line, "token")
        stripped = line.strip(" \t\r\n\f\v")
        if not stripped:  # blank or whitespace-only: the sentence ends
            current = None
            continue
        columns = _COLUMNS.split(stripped)
        if columns[0] == DOCSTART:
            document = 0 if document is None else document + 1
            current = None
            continue
        if len(columns) < 2:
            raise BadFile(
                number,
                f"expected a token and its tag separated by a tab or spaces, got {line!r}",
                field="tag",
            )
        if current is None:
            current = _Sentence(number, document=document)
            sentences.append(current)
        current.tokens.append(columns[0])
        current.tags.append(_tag(number, columns[-1]))
    return sentences


def _tag(number: int, tag: str) -> tuple[str, str | None]:
    if tag == "O":
        return "O", None
    match = _TAG.match(tag)
    if match is None:
        raise BadFile(
            number,
            f"tag {tag!r} is not O or B-TYPE / I-TYPE (the tag is the line's last column)",
            field="tag",
        )
    try:
        kind = _TYPE.validate_python(match[2])
    except ValidationError:
        raise BadFile(
            number,
            f"entity type {match[2]!r} in tag {tag!r}: a type is a letter, then letters, "
            "digits, '_', '.' or '-' (at most 32 characters)",
            field="tag",
        ) from None
    return match[1], kind


def _joined(sentence: _Sentence) -> tuple[str, list[Span]]:
    """The sentence as text (tokens joined by single spaces) and its spans in that text.
    An inside tag continues the open span only when it has the same type; otherwise it
    starts a span (IOB1 and lenient IOB2 readers do the same)."""
    spans: list[Span] = []
    open_span: tuple[int, int, str] | None = None
    offset = 0
    for token, (prefix, kind) in zip(sentence.tokens, sentence.tags, strict=True):
        start, end = offset, offset + len(token)
        offset = end + 1
        continues = prefix in _CONTINUES and open_span is not None and open_span[2] == kind
        if open_span is not None and not continues:
            spans.append(Span(*open_span))
            open_span = None
        if kind is None:
            continue
        open_span = (open_span[0], end, kind) if continues and open_span else (start, end, kind)
    if open_span is not None:
        spans.append(Span(*open_span))
    return " ".join(sentence.tokens), spans


def convert_spans_jsonl(data: bytes) -> tuple[list[InteractionCreate], list[EventEnvelope]]:
    events: dict[str, EventEnvelope] = {}
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        row = json_line(number, raw)
        if not isinstance(row, dict):
            raise BadFile(number, f"expected a JSON object; {_JSONL_SHAPE}")
        check_text(number, row)
        text, spans, document = _spans_row(number, row)
        event = _label(text, spans, document)
        events.setdefault(event.idempotency_key or "", event)
    return [], list(events.values())


def _spans_row(number: int, row: dict[str, Any]) -> tuple[str, list[Span], str | None]:
    unknown = sorted(set(row) - {"text", "spans", "document"})
    if unknown:
        raise BadFile(number, f"unknown key {unknown[0]!r}; {_JSONL_SHAPE}", field=unknown[0])
    text, raw_spans, document = row.get("text"), row.get("spans"), row.get("document")
    if not isinstance(text, str) or not text.strip():
        raise BadFile(number, f"text must be a non-empty string; {_JSONL_SHAPE}", field="text")
    if len(text) > MAX_TEXT_CHARS:
        raise BadFile(number, f"text has {len(text)} characters; at most {MAX_TEXT_CHARS}")
    if not isinstance(raw_spans, list):
        raise BadFile(
            number, "spans must be a list ([] when the text has no entity)", field="spans"
        )
    if document is not None and (not isinstance(document, str) or not document):
        raise BadFile(number, "document must be a non-empty string", field="document")
    spans = [_span(number, index, entry) for index, entry in enumerate(raw_spans)]
    labels = sorted({s.label for s in spans})
    # Types are the project's business (ingest names an undeclared one); offsets are ours.
    problems = check_spans(spans, text, labels)
    if problems:
        where, message = problems[0]
        raise BadFile(number, f"{where}: {message}", field=where)
    return text, sorted(spans), document


def _span(number: int, index: int, entry: Any) -> Span:
    where = f"spans.{index}"
    if not isinstance(entry, dict) or set(entry) != {"start", "end", "label"}:
        raise BadFile(number, f"{where} must be {{'start', 'end', 'label'}}", field=where)
    start, end, label = entry["start"], entry["end"], entry["label"]
    if type(start) is not int or type(end) is not int or not 0 <= start < end:
        raise BadFile(
            number, f"{where}: start and end must be integers with 0 <= start < end", field=where
        )
    if not isinstance(label, str) or not label:
        raise BadFile(number, f"{where}.label must be a non-empty string", field=where)
    return Span(start, end, label)


def _label(text: str, spans: list[Span], document: str | None) -> EventEnvelope:
    """The label event of one text; its key hashes what it says, whichever file said it."""
    value: dict[str, Any] = {"text": text}
    if document is not None:
        value["document"] = document
    payload = [s.as_dict() for s in spans]
    return _EVENT.validate_python(
        {
            "kind": "label",
            "input": value,
            "spans": payload,
            "idempotency_key": "ner-" + content_hash({"input": value, "spans": payload})[:40],
            "metadata": _SOURCE,
        }
    )


CONVERTERS: dict[str, Converter] = {"conll": convert_conll, "spans-jsonl": convert_spans_jsonl}
