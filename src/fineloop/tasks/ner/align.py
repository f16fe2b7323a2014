"""Character spans ↔ BIO tags on a fast tokenizer's sub-words, both ways.

Words are the tokenizer's own (its pre-tokenizer, read back through `word_ids()`), and
their characters come from `offset_mapping`, so offsets stay right for multi-byte
characters, leading spaces and normalised text (lower-casing, accents stripped).

Spans → tags (training):
- a word is inside a span when any of its characters is: a span boundary that cuts
  through a word gives the whole word the span's type (the model can only tag words); a
  word touched by two spans takes the first;
- the first word of a span is B-, the others I-;
- labelling "first": only a word's first sub-word carries its tag, the others are -100
  (ignored by the loss); "all": every sub-word does, continuation sub-words of a B- word
  as I-; special tokens are -100 either way.

A text longer than one window is split into overlapping windows (`stride` tokens shared),
so nothing is cut: each window is one training row.

Tags → spans (prediction): each word reads the tag probabilities of its first sub-word, in
the window where that sub-word has the most context on both sides. BIO decoding tolerates
an I- without its B- (it opens a span); a span runs from the first character of its first
word to the last character of its last word; its score is the mean probability of the
chosen tags over its words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from fineloop.errors import Invalid

IGNORE = -100  # the label the loss skips (transformers' convention)
Labelling = Literal["first", "all"]
WordRange = tuple[int, int]  # a word's characters: start, end (exclusive)


class SpanLike(Protocol):
    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...

    @property
    def label(self) -> str: ...


def require_fast(tokenizer: Any, model: str = "") -> None:
    """Refuse a slow (Python) tokenizer: only fast ones report character offsets."""
    if not getattr(tokenizer, "is_fast", False):
        where = f" of {model!r}" if model else ""
        raise Invalid(
            f"the tokenizer{where} is not a fast (Rust) tokenizer: NER needs its character "
            "offsets. Use a base model whose folder has a tokenizer.json.",
            field="base_model",
        )


def window_stride(max_length: int) -> int:
    """Tokens two neighbouring windows share: a quarter of a window, at most 64."""
    return max(1, min(64, max_length // 4))


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> Any:
    """The texts as windows of at most max_length tokens, with offsets and word ids."""
    return tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        stride=window_stride(max_length),
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )


def windows_by_text(encoding: Any, n_texts: int) -> list[list[int]]:
    """Which windows (rows of `encoding`) belong to each text, in order."""
    found: list[list[int]] = [[] for _ in range(n_texts)]
    for window, text in enumerate(encoding["overflow_to_sample_mapping"]):
        found[int(text)].append(window)
    return found


def word_ranges(encoding: Any, windows: Sequence[int]) -> dict[int, WordRange]:
    """Each word's characters (word id → (start, end)), over all of a text's windows."""
    ranges: dict[int, WordRange] = {}
    for window in windows:
        offsets = encoding["offset_mapping"][window]
        for word, (start, end) in zip(encoding.word_ids(window), offsets, strict=True):
            if word is None or end <= start:
                continue
            old = ranges.get(word)
            ranges[word] = (start, end) if old is None else (min(old[0], start), max(old[1], end))
    return dict(sorted(ranges.items()))


def word_tags(words: Sequence[WordRange], spans: Sequence[SpanLike]) -> list[str]:
    """The BIO tag of each word (in text order) under the spans: see the module doc."""
    ordered = sorted(spans, key=lambda s: (s.start, s.end))
    tags: list[str] = []
    previous: int | None = None  # index of the span the previous word was in
    cursor = 0
    for start, end in words:
        while cursor < len(ordered) and ordered[cursor].end <= start:
            cursor += 1  # spans never overlap, so their ends rise with their starts
        hit = cursor if cursor < len(ordered) and ordered[cursor].start < end else None
        if hit is None:
            tags.append("O")
        else:
            tags.append(("I-" if hit == previous else "B-") + ordered[hit].label)
        previous = hit
    return tags


def token_labels(
    word_ids: Sequence[int | None],
    offsets: Sequence[tuple[int, int]],
    tags: dict[int, str],
    words: dict[int, WordRange],
    tag2id: dict[str, int],
    labelling: Labelling,
) -> list[int]:
    """Label ids of one window's tokens: see the module doc."""
    labels: list[int] = []
    for word, (start, end) in zip(word_ids, offsets, strict=True):
        if word is None or word not in tags or end <= start:  # zero-width: no characters
            labels.append(IGNORE)
            continue
        tag = tags[word]
        first = start <= words[word][0]  # the word's first sub-word (even across windows)
        if first:
            labels.append(tag2id[tag])
        elif labelling == "all":
            labels.append(tag2id["I-" + tag[2:]] if tag.startswith("B-") else tag2id[tag])
        else:
            labels.append(IGNORE)
    return labels


@dataclass
class Encoded:
    """Training rows (one per window) and what the windowing did."""

    rows: dict[str, list[Any]]
    windows: int
    split_texts: int  # texts longer than one window
    dropped_types: dict[str, int]  # spans whose type is not in the tag set
    unplaced: int = 0  # spans on no word of their own (no token, or sharing a word)


def encode(
    tokenizer: Any,
    texts: Sequence[str],
    spans: Sequence[Sequence[SpanLike]],
    tag2id: dict[str, int],
    labelling: Labelling,
    max_length: int,
) -> Encoded:
    """Windows of the texts with their token labels, ready for a token-classification
    collator (`input_ids`, `attention_mask`, maybe `token_type_ids`, `labels`)."""
    if not texts:  # an empty split (a small project may have no validation texts)
        return Encoded({"input_ids": [], "attention_mask": [], "labels": []}, 0, 0, {})
    encoding = tokenize(tokenizer, texts, max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoding]
    rows: dict[str, list[Any]] = {k: [] for k in [*keys, "labels"]}
    dropped: dict[str, int] = {}
    split_texts = unplaced = 0
    for text_index, windows in enumerate(windows_by_text(encoding, len(texts))):
        split_texts += len(windows) > 1
        kept = []
        for span in spans[text_index]:
            if f"B-{span.label}" in tag2id:
                kept.append(span)
            else:
                dropped[span.label] = dropped.get(span.label, 0) + 1
        words = word_ranges(encoding, windows)
        tags = dict(zip(words, word_tags(list(words.values()), kept), strict=True))
        unplaced += len(kept) - sum(tag.startswith("B-") for tag in tags.values())
        for window in windows:
            for key in keys:
                rows[key].append(encoding[key][window])
            rows["labels"].append(
                token_labels(
                    encoding.word_ids(window),
                    encoding["offset_mapping"][window],
                    tags,
                    words,
                    tag2id,
                    labelling,
                )
            )
    return Encoded(rows, len(rows["labels"]), split_texts, dropped, unplaced)


def word_probabilities(
    encoding: Any, windows: Sequence[int], probs: Sequence[np.ndarray]
) -> tuple[list[WordRange], np.ndarray]:
    """A text's words and, per word, the tag probabilities of its first sub-word in the
    window where that sub-word sits farthest from the window's edges. `probs[i]` is
    window `windows[i]`'s (tokens x tags) array."""
    words = word_ranges(encoding, windows)
    best: dict[int, tuple[int, np.ndarray]] = {}
    for window, window_probs in zip(windows, probs, strict=True):
        ids = encoding.word_ids(window)
        content = [i for i, w in enumerate(ids) if w is not None]
        if not content:
            continue
        low, high = content[0], content[-1]
        offsets = encoding["offset_mapping"][window]
        for position, word in enumerate(ids):
            start, end = offsets[position]
            if word is None or word not in words or start > words[word][0] or end <= start:
                continue
            room = min(position - low, high - position)
            if word not in best or room > best[word][0]:
                best[word] = (room, window_probs[position])
    order = [w for w in words if w in best]
    if not order:
        return [], np.zeros((0, 0))
    return [words[w] for w in order], np.stack([best[w][1] for w in order])


def decode_spans(
    text: str, words: Sequence[WordRange], probs: np.ndarray, tags: Sequence[str]
) -> list[dict[str, Any]]:
    """Span dicts from per-word tag probabilities (words x tags): see the module doc."""
    spans: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    scores: list[float] = []

    def close() -> None:
        if current is not None:
            current["score"] = round(float(sum(scores) / len(scores)), 6)
            current["text"] = text[current["start"] : current["end"]]
            spans.append(current)

    for (start, end), row in zip(words, probs, strict=True):
        index = int(np.argmax(row))
        tag, score = tags[index], float(row[index])
        if tag == "O" or "-" not in tag:
            close()
            current, scores = None, []
            continue
        prefix, label = tag.split("-", 1)
        if prefix == "I" and current is not None and current["label"] == label:
            current["end"] = end
            scores.append(score)
            continue
        close()
        current, scores = {"start": start, "end": end, "label": label}, [score]
    close()
    return spans


def one_hot(tags_of_words: Sequence[str], tags: Sequence[str]) -> np.ndarray:
    """Tags as probability rows (1 for the tag): decode_spans of gold tags."""
    index = {t: i for i, t in enumerate(tags)}
    rows = np.zeros((len(tags_of_words), len(tags)), dtype=np.float32)
    for row, tag in enumerate(tags_of_words):
        rows[row, index[tag]] = 1.0
    return rows
