"""Character spans ↔ BIO tags on sub-words (align.py), on the tiny base's WordPiece
tokenizer, which splits "degrees" and "exchanger" into several pieces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fineloop.errors import Invalid
from fineloop.tasks.ner.align import (
    IGNORE,
    decode_spans,
    encode,
    one_hot,
    require_fast,
    tokenize,
    windows_by_text,
    word_ranges,
    word_tags,
)
from fineloop.tasks.ner.options import NerOptions
from fineloop.tasks.ner.spans import Span

TAGS = NerOptions(entity_types=["EQUIPMENT", "MEASURE"]).tags()
TAG2ID = {t: i for i, t in enumerate(TAGS)}
TEXT = "checked heat exchanger pressure at 80 degrees"
SPANS = [Span(8, 22, "EQUIPMENT"), Span(35, 45, "MEASURE")]


@pytest.fixture(scope="module")
def tokenizer(ner_base: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ner_base)


def words(tokenizer: Any, text: str) -> list[tuple[int, int]]:
    encoding = tokenize(tokenizer, [text], 128)
    return list(word_ranges(encoding, windows_by_text(encoding, 1)[0]).values())


def test_word_tags_bio_and_a_span_cutting_a_word() -> None:
    text_words = [(0, 5), (6, 10), (11, 20), (21, 24)]  # "check heat exchange dept"
    two_words = word_tags(text_words, [Span(6, 20, "EQUIPMENT")])
    assert two_words == ["O", "B-EQUIPMENT", "I-EQUIPMENT", "O"]
    # A span ending inside "exchange" (13) still gives the whole word its type.
    cut = word_tags(text_words, [Span(6, 13, "EQUIPMENT")])
    assert cut == ["O", "B-EQUIPMENT", "I-EQUIPMENT", "O"]
    # A span starting inside a word: that word opens the span.
    assert word_tags(text_words, [Span(8, 10, "MEASURE")]) == ["O", "B-MEASURE", "O", "O"]
    # Two spans side by side of one type stay two entities.
    adjacent = word_tags(text_words, [Span(6, 10, "EQUIPMENT"), Span(11, 20, "EQUIPMENT")])
    assert adjacent == ["O", "B-EQUIPMENT", "B-EQUIPMENT", "O"]


def labelled(tokenizer: Any, labelling: str) -> tuple[list[int | None], list[int]]:
    encoded = encode(tokenizer, [TEXT], [SPANS], TAG2ID, labelling, 128)  # type: ignore[arg-type]
    assert encoded.windows == 1 and encoded.split_texts == 0
    ids = tokenizer(TEXT).word_ids()
    return ids, encoded.rows["labels"][0]


def test_first_labels_only_the_first_sub_word(tokenizer: Any) -> None:
    ids, labels = labelled(tokenizer, "first")
    assert len(set(ids)) < len(ids) - 1, "the text must have a word of several sub-words"
    tags = word_tags(words(tokenizer, TEXT), SPANS)
    for position, word in enumerate(ids):
        first = word is not None and (position == 0 or ids[position - 1] != word)
        if first:
            assert labels[position] == TAG2ID[tags[word]]  # type: ignore[index]
        else:  # special tokens and continuation sub-words
            assert labels[position] == IGNORE
    assert [TAGS[label] for label in labels if label != IGNORE] == [
        "O", "B-EQUIPMENT", "I-EQUIPMENT", "O", "O", "B-MEASURE", "I-MEASURE"
    ]  # fmt: skip


def test_all_labels_every_sub_word_continuations_inside(tokenizer: Any) -> None:
    ids, labels = labelled(tokenizer, "all")
    assert labels[0] == IGNORE and labels[-1] == IGNORE  # [CLS], [SEP]
    assert all(label != IGNORE for label in labels[1:-1])
    by_word: dict[int, list[str]] = {}
    for word, label in zip(ids, labels, strict=True):
        if word is not None:
            by_word.setdefault(word, []).append(TAGS[label])
    degrees = by_word[max(by_word)]  # "degrees", several pieces, inside "80 degrees"
    assert len(degrees) > 1 and set(degrees) == {"I-MEASURE"}
    heat = by_word[1]
    assert heat[0] == "B-EQUIPMENT" and all(t == "I-EQUIPMENT" for t in heat[1:])
    eighty = by_word[5]
    assert eighty[0] == "B-MEASURE" and all(t == "I-MEASURE" for t in eighty[1:])


@pytest.mark.parametrize(
    "text",
    [
        TEXT,
        "   leading spaces: the pump reads 30 bar",
        "Ünïcödé boiler — 12 psi 😀 then the gearbox",
        "pump",
    ],
)
def test_spans_to_tags_to_spans_is_identity_on_word_spans(tokenizer: Any, text: str) -> None:
    found = words(tokenizer, text)
    # Word-aligned spans: every other word an entity, with one two-word span.
    spans = [Span(found[0][0], found[0][1], "EQUIPMENT")]
    if len(found) > 3:
        spans.append(Span(found[2][0], found[3][1], "MEASURE"))
    tags = word_tags(found, spans)
    decoded = decode_spans(text, found, one_hot(tags, TAGS), TAGS)
    assert [Span(s["start"], s["end"], s["label"]) for s in decoded] == spans
    assert all(s["text"] == text[s["start"] : s["end"]] and s["score"] == 1.0 for s in decoded)


def test_decoding_tolerates_i_without_b_and_averages_scores() -> None:
    text = "aa bb cc dd ee"
    spans_words = [(0, 2), (3, 5), (6, 8), (9, 11), (12, 14)]
    tags = ["O", "I-MEASURE", "I-MEASURE", "B-MEASURE", "I-EQUIPMENT"]
    probs = one_hot(tags, TAGS) * 0.5 + 0.5 / len(TAGS) * (1 - one_hot(tags, TAGS))
    probs[1, TAG2ID["I-MEASURE"]] = 0.9
    decoded = decode_spans(text, spans_words, probs, TAGS)
    assert [(s["start"], s["end"], s["label"]) for s in decoded] == [
        (3, 8, "MEASURE"),  # opened by an I-
        (9, 11, "MEASURE"),
        (12, 14, "EQUIPMENT"),  # an I- of another type opens its own span
    ]
    assert decoded[0]["score"] == pytest.approx((0.9 + 0.5) / 2)
    assert decoded[0]["text"] == "bb cc"


def test_long_text_is_windowed_not_cut(tokenizer: Any) -> None:
    text = " ".join(["the pump reads 30 bar"] * 20)  # ~100 words, far past 16 tokens
    pieces = text.split(" ")
    spans, at = [], 0
    for index, piece in enumerate(pieces):
        if index % 5 == 1:
            spans.append(Span(at, at + len(piece), "EQUIPMENT"))
        at += len(piece) + 1
    encoded = encode(tokenizer, [text], [spans], TAG2ID, "first", 16)
    assert encoded.windows > 5 and encoded.split_texts == 1
    starts = sum(label == TAG2ID["B-EQUIPMENT"] for row in encoded.rows["labels"] for label in row)
    assert starts >= len(spans)  # every span labelled in some window (overlaps count twice)
    assert all(len(row) <= 16 for row in encoded.rows["input_ids"])


def test_unknown_span_types_are_counted_not_trained(tokenizer: Any) -> None:
    encoded = encode(tokenizer, [TEXT], [[*SPANS, Span(0, 7, "ACTION")]], TAG2ID, "first", 64)
    assert encoded.dropped_types == {"ACTION": 1} and encoded.unplaced == 0


def test_spans_on_no_word_of_their_own_are_counted(tokenizer: Any) -> None:
    text = "pump\u200b\u200b valve"  # zero-width spaces: characters the tokenizer drops
    spans = [Span(0, 2, "EQUIPMENT"), Span(2, 4, "MEASURE"), Span(4, 6, "MEASURE")]
    encoded = encode(tokenizer, [text], [spans], TAG2ID, "first", 64)
    assert encoded.unplaced == 2  # "mp" shares "pump" with "pu"; the zero-width span


def test_a_slow_tokenizer_is_refused() -> None:
    class Slow:
        is_fast = False

    with pytest.raises(Invalid) as raised:
        require_fast(Slow(), "my-model")
    assert raised.value.field == "base_model" and "fast" in raised.value.message


def test_one_hot_rows_sum_to_one() -> None:
    rows = one_hot(["O", "B-MEASURE"], TAGS)
    assert np.allclose(rows.sum(axis=1), 1.0) and rows[1, TAG2ID["B-MEASURE"]] == 1.0
