"""What the NER model tests share: a tiny BERT base whose WordPiece tokenizer splits
words into sub-words (trained in-process on the texts below), a small maintenance-log
corpus with EQUIPMENT and MEASURE spans, a snapshot writer using the builder's own
`save_splits`, and a sink that keeps what it is told."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

TYPES = ["EQUIPMENT", "MEASURE"]
EQUIPMENT = ["pump", "valve", "compressor", "boiler", "heat exchanger", "gearbox"]
MEASURES = ["30 bar", "12 psi", "450 rpm", "80 degrees"]
TEMPLATES = [
    "replaced the {E} after it leaked",
    "the {E} reads {M} today",
    "checked {E} pressure at {M}",
    "operator says the {E} is noisy",
    "no issue found on the line",
]


def example(template: str, equipment: str, measure: str) -> dict[str, Any]:
    """One text with its spans, in the snapshot's row shape."""
    text, spans = "", []
    rest = template
    while rest:
        at = min((i for i in (rest.find("{E}"), rest.find("{M}")) if i >= 0), default=-1)
        if at < 0:
            text += rest
            break
        text += rest[:at]
        kind = rest[at : at + 3]
        value, label = (equipment, "EQUIPMENT") if kind == "{E}" else (measure, "MEASURE")
        spans.append({"start": len(text), "end": len(text) + len(value), "label": label})
        text += value
        rest = rest[at + 3 :]
    return {"text": text, "spans": spans}


def corpus(count: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        example(TEMPLATES[i % len(TEMPLATES)], rng.choice(EQUIPMENT), rng.choice(MEASURES))
        for i in range(count)
    ]


def build_tiny_ner_base(out_dir: Path, extra_texts: list[str] | None = None) -> Path:
    """A 2-layer, 32-wide BERT (no head) with a 140-piece WordPiece tokenizer: long words
    come out as several sub-words, so "first" and "all" labelling differ."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    texts = [row["text"] for row in corpus(60)] + list(extra_texts or [])
    backend.train_from_iterator(
        texts * 3,
        trainer=WordPieceTrainer(vocab_size=140, special_tokens=special, show_progress=False),
    )
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )
    config = BertConfig(
        vocab_size=backend.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    target = out_dir / "tiny-ner-base"
    BertModel(config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def features() -> dict[str, Any]:
    from datasets import List, Value  # type: ignore[import-untyped]

    span = {"start": Value("int64"), "end": Value("int64"), "label": Value("string")}
    return {
        "text": Value("string"),
        "spans": List(span),
        "document": Value("string"),
        "feedback_ids": List(Value("int64")),
    }


def write_snapshot(
    out: Path,
    splits: dict[str, list[dict[str, Any]]],
    types: list[str] = TYPES,
    labelling: str = "first",
) -> Path:
    """examples/ (train, validation, test) and snapshot.json, as the builder writes them."""
    from fineloop.data.snapshot_io import save_splits, write_meta

    rows = [
        {
            "split": name,
            "text": row["text"],
            "spans": row["spans"],
            "document": f"{name}-{i}",
            "feedback_ids": [i],
        }
        for name, split_rows in splits.items()
        for i, row in enumerate(split_rows)
    ]
    counts = save_splits(out / "examples", rows, features())
    config = {"entity_types": types, "labelling": labelling}
    write_meta(out, {"id": out.name, "task": "ner", "config": config, "splits": counts})
    return out


class RecordingSink:
    """A sink that keeps every report (and can ask to cancel)."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.logs: list[str] = []
        self.metrics: list[tuple[str, int, float]] = []
        self.fractions: list[float] = []
        self.cancel_after = cancel_after

    def progress(self, fraction: float, message: str = "") -> None:
        self.fractions.append(fraction)

    def metric(self, name: str, step: int, value: float) -> None:
        self.metrics.append((name, step, value))

    def log(self, message: str) -> None:
        self.logs.append(message)

    def cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.fractions) >= self.cancel_after


def every_word_model(base: Path, out: Path, tag: str = "B-EQUIPMENT") -> Path:
    """`base` with a head that gives every token `tag` (zero weights, a biased bias):
    its spans are exactly the tokenizer's words, whatever the text."""
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from fineloop.tasks.ner.options import NerOptions

    tags = NerOptions(entity_types=TYPES).tags()
    model = AutoModelForTokenClassification.from_pretrained(
        base,
        num_labels=len(tags),
        id2label=dict(enumerate(tags)),
        label2id={t: i for i, t in enumerate(tags)},
    )
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.bias[tags.index(tag)] = 5.0
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out
