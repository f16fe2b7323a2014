"""`NerPredictor`: character offsets (multi-byte characters, leading spaces), texts past
one window, batching, threads, warm-up, and what it refuses."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pytest

from fineloop.config import Settings
from fineloop.errors import Invalid
from fineloop.tasks.ner.predict import NerPredictor
from ner.model_helpers import TYPES, corpus, every_word_model

# The tiny tokenizer's words: BERT's pre-tokenizer splits on spaces and punctuation.
WORDS = re.compile(r"\w+|[^\w\s]")


@pytest.fixture(scope="module")
def every_word(ner_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model that tags every token B-EQUIPMENT: each word is a span of its own."""
    return every_word_model(ner_base, tmp_path_factory.mktemp("every-word"))


def expected(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group()) for m in WORDS.finditer(text)]


def found(spans: list[dict[str, Any]]) -> list[tuple[int, int, str]]:
    return [(s["start"], s["end"], s["text"]) for s in spans]


@pytest.mark.parametrize(
    "text",
    [
        "   leading spaces then the pump",
        "Ünïcödé boiler — 12 psi 😀 then the gearbox",
        "Straße café naïve 30 bar",
        "tab\tand\nnewline   between",
    ],
)
def test_offsets_are_characters_of_the_given_text(every_word: Path, text: str) -> None:
    [spans] = NerPredictor(str(every_word)).extract([text])
    assert found(spans) == expected(text)
    assert all(s["label"] == "EQUIPMENT" and 0.9 < s["score"] <= 1.0 for s in spans)


def test_cjk_ideographs_are_words_of_their_own(every_word: Path) -> None:
    """BERT's pre-tokenizer makes each ideograph a word: spans can be that fine."""
    [spans] = NerPredictor(str(every_word)).extract(["日本 pump"])
    assert found(spans) == [(0, 1, "日"), (1, 2, "本"), (3, 7, "pump")]


def test_a_text_past_one_window_is_read_to_the_end(every_word: Path) -> None:
    text = " ".join(f"pump{i % 10} valve" for i in range(60))  # ~180 tokens, windows of 16
    predictor = NerPredictor(str(every_word), max_length=16)
    assert predictor.max_length == 16
    [spans] = predictor.extract([text])
    assert found(spans) == expected(text)
    assert spans[-1]["end"] == len(text)


def test_window_length_is_capped_by_the_model(every_word: Path) -> None:
    assert NerPredictor(str(every_word), max_length=4096).max_length == 128


def test_batches_and_single_texts_agree(
    ner_trained: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fineloop.tasks.ner import predict

    folder, _ = ner_trained
    texts = [row["text"] for row in corpus(20)] + ["", "   "]
    monkeypatch.setattr(predict, "CHUNK_TEXTS", 7)  # texts tokenized 7 at a time
    batched = NerPredictor(str(folder), batch_size=3).extract(texts)
    one_by_one = NerPredictor(str(folder)).extract
    singles = [one_by_one([text])[0] for text in texts]
    assert batched == singles
    assert batched[-2:] == [[], []]
    for text, spans in zip(texts, batched, strict=True):
        ends = [0] + [s["end"] for s in spans]
        starts = [s["start"] for s in spans] + [len(text)]
        assert all(a <= b for a, b in zip(ends, starts, strict=True))  # sorted, no overlap


def test_extract_from_several_threads(ner_trained: tuple[Path, Any]) -> None:
    predictor = NerPredictor(str(ner_trained[0]))
    texts = [row["text"] for row in corpus(12)]
    want = predictor.extract(texts)
    results: list[Any] = [None] * 4
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            results[index] = [predictor.extract([text])[0] for text in texts]
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and all(result == want for result in results)


def test_entity_types_and_warm_up(ner_trained: tuple[Path, Any], settings: Settings) -> None:
    predictor = NerPredictor(str(ner_trained[0]))
    assert predictor.entity_types == TYPES
    predictor.prepare_for_serving(settings.model_copy(update={"serving_threads": 1}))
    assert predictor.threads == 1
    assert predictor.extract([]) == []


def test_a_model_without_ner_tags_is_refused(ner_base: Path, tmp_path: Path) -> None:
    with pytest.raises(Invalid) as raised:
        NerPredictor(str(ner_base))
    assert raised.value.field == "model" and "not a NER model" in raised.value.message
    with pytest.raises(Invalid):
        NerPredictor(str(tmp_path / "missing"))


def test_a_base_scored_with_tags_gets_a_seeded_head(ner_base: Path) -> None:
    tags = ["O", "B-EQUIPMENT", "I-EQUIPMENT"]
    text = ["replaced the pump after it leaked"]
    first = NerPredictor(str(ner_base), tags=tags)
    assert first.entity_types == ["EQUIPMENT"]
    assert first.extract(text) == NerPredictor(str(ner_base), tags=tags).extract(text)


def test_offsets_with_the_default_base_tokenizer(tmp_path: Path) -> None:
    """The packaged MiniLM's WordPiece lower-cases, strips accents and splits words into
    sub-words: the spans still point at the original characters."""
    from fineloop.tasks.embedding.config import packaged_minilm_path

    model = every_word_model(Path(packaged_minilm_path()), tmp_path / "minilm-every-word")
    text = "  Ünïcödé Flowserve-pump reads 4.5 bar 😀!"
    [spans] = NerPredictor(str(model)).extract([text])
    assert found(spans) == expected(text)
