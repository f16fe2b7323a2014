"""Training a token classifier on a NER snapshot: what is saved, early stopping and the
best epoch, class weights, LoRA merged before saving, continuing a champion, cancel."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from fineloop.errors import Invalid
from fineloop.tasks.base import JobCancelled
from fineloop.tasks.ner.config import NerTrainConfig
from fineloop.tasks.ner.options import NerOptions
from fineloop.tasks.ner.predict import NerPredictor
from fineloop.tasks.ner.train import RECORD, train
from fineloop.tasks.ner.train_trainer import WeightedTrainer, class_weights
from ner.model_helpers import TYPES, RecordingSink, corpus, write_snapshot

TAGS = NerOptions(entity_types=TYPES).tags()
QUICK = {"learning_rate": 5e-3, "batch_size": 8, "max_steps": 3, "logging_steps": 1}


def test_saved_folder_is_a_plain_token_classifier_that_finds_spans(
    ner_trained: tuple[Path, Any], ner_snapshot: Path
) -> None:
    from transformers import AutoModelForTokenClassification

    folder, _ = ner_trained
    model = AutoModelForTokenClassification.from_pretrained(folder)
    assert [model.config.id2label[i] for i in range(len(TAGS))] == TAGS
    assert not (folder / "adapter_config.json").exists() and not (folder / ".work").exists()
    rows = corpus(30)
    found = NerPredictor(str(folder)).extract([row["text"] for row in rows[:10]])
    assert any(found), "a model trained on these texts finds spans in them"
    for row, spans in zip(rows, found, strict=False):
        for span in spans:
            assert 0 <= span["start"] < span["end"] <= len(row["text"])
            assert span["label"] in TYPES and 0 < span["score"] <= 1
    record = json.loads((folder / RECORD).read_text())
    assert record["task"] == "ner" and record["tags"] == TAGS and record["head"] == "new"
    assert record["snapshot_id"] == ner_snapshot.name


def test_best_epoch_is_kept_and_training_stops_early(ner_trained: tuple[Path, Any]) -> None:
    folder, sink = ner_trained
    record = json.loads((folder / RECORD).read_text())
    scores = [e["f1"] for e in record["evaluations"]]
    assert record["best_f1"] == max(scores) > 0.8
    # 30 epochs asked; patience 3 ends the run 3 evaluations after the best one.
    assert len(scores) < 30 and len(scores) == scores.index(max(scores)) + 1 + 3
    reported = [value for name, _, value in sink.metrics if name == "eval_f1"]
    assert reported == scores
    assert any(name == "loss" for name, _, _ in sink.metrics) and sink.fractions[-1] == 1.0


def test_class_weights_favour_rare_tags() -> None:
    labels = [[-100, 0, 0, 0, 0, 0, 0, 1, 2, -100], [0, 0, 1, -100]]
    weights = class_weights(labels, len(TAGS), 0.5)
    assert weights[1] > weights[0] and weights[2] > weights[1]  # O common, I- rarest
    counts = [8, 2, 1, 0, 0]
    mean = sum(c * w for c, w in zip(counts, weights, strict=True)) / sum(counts)
    assert mean == pytest.approx(1.0)  # the average labelled token weighs 1
    assert class_weights(labels, len(TAGS), 0.0) == [1.0] * len(TAGS)


def test_class_weights_change_the_loss(ner_base: Path, tmp_path: Path) -> None:
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        TrainingArguments,
    )

    from fineloop.tasks.ner.align import encode
    from fineloop.tasks.ner.spans import Span

    tokenizer = AutoTokenizer.from_pretrained(ner_base)
    model = AutoModelForTokenClassification.from_pretrained(ner_base, num_labels=len(TAGS))
    rows = corpus(6)
    spans = [[Span(s["start"], s["end"], s["label"]) for s in r["spans"]] for r in rows]
    tag2id = {t: i for i, t in enumerate(TAGS)}
    encoded = encode(tokenizer, [r["text"] for r in rows], spans, tag2id, "first", 64)
    keys = encoded.rows
    batch = DataCollatorForTokenClassification(tokenizer)(
        [{k: keys[k][i] for k in keys} for i in range(encoded.windows)]
    )
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")

    def loss(weights: list[float] | None) -> float:
        trainer = WeightedTrainer(model=model, args=args, class_weights=weights)
        with torch.no_grad():
            return float(trainer.compute_loss(model, dict(batch)))  # type: ignore[arg-type]

    plain = loss(None)
    assert loss([1.0] * len(TAGS)) == pytest.approx(plain, rel=1e-5)  # same as the model's
    weighted = loss(class_weights(keys["labels"], len(TAGS), 1.0))
    assert weighted != pytest.approx(plain, rel=1e-3)


def test_lora_run_saves_a_merged_plain_model(
    ner_base: Path, ner_snapshot: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    config = NerTrainConfig(**QUICK | {"max_steps": None, "epochs": 2}, lora=True, lora_r=4)
    out = train(ner_snapshot, str(ner_base), config, tmp_path / "lora", RecordingSink())
    assert not (out / "adapter_config.json").exists()
    record = json.loads((out / RECORD).read_text())
    assert len(record["evaluations"]) == 2  # the best of two epochs' adapters was merged
    weights = load_file(str(out / "model.safetensors"))
    assert not any("lora" in name for name in weights)
    query = "bert.encoder.layer.0.attention.self.query.weight"
    before = load_file(str(ner_base / "model.safetensors"))
    base_query = before.get(query, before.get(query.removeprefix("bert.")))
    assert not torch.equal(weights[query], base_query), "the adapter is merged in"
    assert NerPredictor(str(out)).entity_types == TYPES


def test_continuing_a_champion_keeps_its_head_other_tags_get_a_new_one(
    ner_trained: tuple[Path, Any], ner_snapshot: Path, tmp_path: Path
) -> None:
    champion, _ = ner_trained
    sink = RecordingSink()
    config = NerTrainConfig(**QUICK)
    train(ner_snapshot, str(champion), config, tmp_path / "again", sink)
    assert any("head kept" in line for line in sink.logs)
    rows = corpus(12)
    parts = [
        {"text": r["text"], "spans": [s | {"label": "PART"} for s in r["spans"]]} for r in rows
    ]
    other = write_snapshot(tmp_path / "parts", {"train": parts, "validation": parts[:4]}, ["PART"])
    sink = RecordingSink()
    out = train(other, str(champion), config, tmp_path / "parts-model", sink)
    assert any("other tags" in line for line in sink.logs)
    assert NerPredictor(str(out)).tags == ["O", "B-PART", "I-PART"]


def test_without_validation_trains_all_steps_and_saves_the_last(
    ner_base: Path, tmp_path: Path
) -> None:
    rows = corpus(10)
    long = " ".join(row["text"] for row in rows)  # ~60 words: windows of 16 tokens
    snapshot = write_snapshot(
        tmp_path / "snap", {"train": [*rows, {"text": long, "spans": []}]}, labelling="all"
    )
    sink = RecordingSink()
    config = NerTrainConfig(**QUICK | {"max_length": 16})
    out = train(snapshot, str(ner_base), config, tmp_path / "m", sink)
    record = json.loads((out / RECORD).read_text())
    assert record["steps"] == 3 and record["evaluations"] == [] and record["best_f1"] is None
    assert record["split_texts"] == 1 and record["windows"] > 11
    assert any("1 of 11 texts are longer than 16 tokens" in line for line in sink.logs)


def test_cancel_stops_and_saves_nothing(ner_base: Path, ner_snapshot: Path, tmp_path: Path) -> None:
    sink = RecordingSink(cancel_after=1)
    config = NerTrainConfig(**QUICK | {"max_steps": 50})
    with pytest.raises(JobCancelled):
        train(ner_snapshot, str(ner_base), config, tmp_path / "cancelled", sink)
    assert not (tmp_path / "cancelled" / "config.json").exists()
    assert not (tmp_path / "cancelled" / ".work").exists()


def test_empty_train_split_is_refused(ner_base: Path, tmp_path: Path) -> None:
    snapshot = write_snapshot(tmp_path / "empty", {"test": corpus(2)})
    with pytest.raises(Invalid) as raised:
        train(snapshot, str(ner_base), NerTrainConfig(), tmp_path / "m", RecordingSink())
    assert raised.value.field == "snapshot"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"class_weight_power": 1.5}, "train.class_weight_power"),
        ({"learning_rate": 0}, "train.learning_rate"),
        ({"max_length": 4}, "train.max_length"),
        ({"labelling": "first"}, "train.labelling"),  # a project option, not a train one
    ],
)
def test_config_errors_name_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(Invalid) as raised:
        NerTrainConfig.parse(overrides)
    assert raised.value.field == field


def test_config_defaults() -> None:
    config = NerTrainConfig.parse({})
    assert (config.learning_rate, config.epochs, config.batch_size, config.max_length) == (
        5e-5,
        5,
        16,
        256,
    )
    assert config.class_weight_power == 0.5 and config.early_stopping_patience == 2
    assert config.lora is False and config.max_steps is None


def test_train_leaves_the_base_folder_unchanged(ner_base: Path, tmp_path: Path) -> None:
    copy = tmp_path / "base"
    shutil.copytree(ner_base, copy)
    before = sorted(p.name for p in copy.iterdir())
    snapshot = write_snapshot(tmp_path / "snap", {"train": corpus(4)})
    train(snapshot, str(copy), NerTrainConfig(**QUICK), tmp_path / "m", RecordingSink())
    assert sorted(p.name for p in copy.iterdir()) == before
