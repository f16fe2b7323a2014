"""Entity-level evaluation: the metric on hand-made span sets, then models on a snapshot
(a trained one beats its base text by text, which is what the gate compares)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fineloop.errors import Invalid
from fineloop.tasks.ner.evaluate import entities, evaluate, score
from fineloop.tasks.ner.spans import Span
from ner.model_helpers import TYPES, corpus, write_snapshot

TEXTS = ["the pump reads 30 bar", "no issue found", "heat exchanger at 80 degrees"]
GOLD = [
    [Span(4, 8, "EQUIPMENT"), Span(15, 21, "MEASURE")],
    [],
    [Span(0, 14, "EQUIPMENT"), Span(18, 28, "MEASURE")],
]


def test_gold_against_itself_scores_one() -> None:
    metrics, per_example, _ = score(TEXTS, GOLD, GOLD, TYPES)
    assert metrics["f1"] == metrics["precision"] == metrics["recall"] == 1.0
    assert metrics["f1_strict"] == 1.0
    assert metrics["f1_EQUIPMENT"] == metrics["f1_MEASURE"] == 1.0
    assert metrics["support_EQUIPMENT"] == 2 and metrics["support_MEASURE"] == 2
    assert per_example == [1.0, 1.0, 1.0]  # the text without entities: nothing to find


def test_misses_boundaries_and_extra_spans() -> None:
    predicted = [
        [Span(4, 8, "EQUIPMENT")],  # the measure missed
        [Span(3, 8, "MEASURE")],  # a span where there is none
        [Span(5, 14, "EQUIPMENT"), Span(18, 28, "EQUIPMENT")],  # boundary, wrong type
    ]
    metrics, per_example, _ = score(TEXTS, GOLD, predicted, TYPES)
    # 1 of 4 predicted entities right, 1 of 4 gold found.
    assert metrics["precision"] == pytest.approx(0.25) and metrics["recall"] == pytest.approx(0.25)
    assert metrics["f1"] == pytest.approx(0.25)
    assert per_example == pytest.approx([2 * 1 / 3, 0.0, 0.0])
    assert metrics["support_MEASURE"] == 2 and metrics["recall_MEASURE"] == 0.0
    assert metrics["precision_EQUIPMENT"] == pytest.approx(1 / 3)


def test_a_span_cutting_a_word_counts_as_the_whole_word() -> None:
    cut = [[Span(4, 7, "EQUIPMENT"), Span(16, 21, "MEASURE")], [], GOLD[2]]  # "pum", "0 bar"
    metrics, _, _ = score(TEXTS, GOLD, cut, TYPES)
    assert metrics["f1"] == 1.0


def test_declared_types_are_always_reported() -> None:
    metrics, _, _ = score(["nothing here"], [[]], [[]], [*TYPES, "PART"])
    assert metrics["support_PART"] == 0 and metrics["f1_PART"] == 0.0
    assert metrics["f1"] == 0.0  # seqeval: no entity at all scores 0


def test_entities_read_bio_like_seqeval() -> None:
    tags = ["B-A", "I-A", "O", "I-B", "B-B", "I-A"]
    assert entities(tags) == {("A", 0, 1), ("B", 3, 3), ("B", 4, 4), ("A", 5, 5)}


def test_trained_model_beats_its_base_text_by_text(
    ner_trained: tuple[Path, Any], ner_base: Path, ner_snapshot: Path
) -> None:
    trained = evaluate(str(ner_trained[0]), ner_snapshot)
    base = evaluate(str(ner_base), ner_snapshot)  # a fresh head: it finds nothing useful
    assert trained.primary == base.primary == "f1" and trained.higher_is_better
    assert len(trained.per_example) == len(base.per_example) == 10
    mean = sum(trained.per_example) / 10
    assert mean > sum(base.per_example) / 10 + 0.3
    assert trained.metrics["f1"] > 0.8 and base.metrics["f1"] < 0.3
    assert trained.improvement(base) > 0.5
    for name in ("precision", "recall", "f1_strict", "f1_EQUIPMENT", "support_MEASURE"):
        assert name in trained.metrics and name in base.metrics
    sample = trained.samples[0]
    rows = corpus(30)[10:]
    assert sample["input"] == {"text": rows[0]["text"]}
    assert [(s["start"], s["end"], s["label"]) for s in sample["reference"]["spans"]] == [
        (s["start"], s["end"], s["label"]) for s in rows[0]["spans"]
    ]
    assert all(
        {"start", "end", "label", "score", "text"} <= set(s) for s in sample["output"]["spans"]
    )
    assert len(trained.samples) == 8


def test_an_empty_split_is_refused(ner_trained: tuple[Path, Any], tmp_path: Path) -> None:
    snapshot = write_snapshot(tmp_path / "snap", {"train": corpus(3)})
    with pytest.raises(Invalid) as raised:
        evaluate(str(ner_trained[0]), snapshot, "test")
    assert raised.value.field == "split"
    with pytest.raises(Invalid):
        evaluate(str(ner_trained[0]), snapshot, "dev")


def read_conll(path: Path, limit: int) -> list[dict[str, Any]]:
    """The first `limit` sentences of a WNUT-17 file as texts (tokens joined by spaces)
    and spans. Any whitespace-only line ends a sentence (see the dataset's SOURCE.md)."""
    rows: list[dict[str, Any]] = []
    tokens: list[tuple[str, str]] = []
    for line in [*path.read_text().splitlines(), ""]:
        if line.strip():
            token, tag = line.split("\t")[:2]
            tokens.append((token, tag.strip()))
            continue
        if not tokens:
            continue
        text, spans, previous = "", [], "O"
        for token, tag in tokens:
            start = len(text) + (1 if text else 0)
            text = f"{text} {token}" if text else token
            if tag.startswith("I-") and previous != "O" and previous[2:] == tag[2:]:
                spans[-1]["end"] = len(text)
            elif tag != "O":  # B-, or an I- that continues nothing
                spans.append({"start": start, "end": len(text), "label": tag[2:]})
            previous = tag
        rows.append({"text": text, "spans": spans})
        tokens = []
        if len(rows) == limit:
            break
    return rows


@pytest.mark.slow
def test_wnut17_subset_the_default_base_learns_entities(tmp_path: Path) -> None:
    """Real, noisy text (WNUT-17: tweets, comments) on the packaged MiniLM: 600 sentences,
    2 epochs. Measured at 1,500 sentences and 3 epochs: test F1 0.39 (base 0.01)."""
    from conftest import DATASETS
    from fineloop.tasks.embedding.config import packaged_minilm_path
    from fineloop.tasks.ner.config import NerTrainConfig
    from fineloop.tasks.ner.train import train
    from ner.model_helpers import RecordingSink

    folder = DATASETS / "wnut17"
    if not folder.exists():
        pytest.skip(f"no WNUT-17 copy at {folder}")
    types = ["person", "location", "group", "creative-work", "corporation", "product"]
    splits = {
        "train": read_conll(folder / "wnut17train.conll", 600),
        "validation": read_conll(folder / "emerging.dev.conll", 150),
        "test": read_conll(folder / "emerging.test.annotated", 200),
    }
    snapshot = write_snapshot(tmp_path / "snap", splits, types)
    config = NerTrainConfig(learning_rate=1e-4, epochs=2, max_length=128)
    model = train(snapshot, packaged_minilm_path(), config, tmp_path / "m", RecordingSink())
    trained, base = evaluate(str(model), snapshot), evaluate(packaged_minilm_path(), snapshot)
    assert trained.metrics["f1"] > 0.15 > base.metrics["f1"]
    assert sum(trained.per_example) > sum(base.per_example) + 0.2 * len(base.per_example)
