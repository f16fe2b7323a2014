"""Fine-tune a token classifier on a NER snapshot: load → encode → Trainer → save.

transformers' `Trainer` does the work. Each epoch ends with an evaluation on the
validation split (entity-level F1, seqeval); the best epoch is the one saved, and
`early_stopping_patience` evaluations without a gain end the run. Without a validation
split the run trains for all its epochs and saves the last.

The result is a plain token-classification folder (config with `id2label` = the
project's tags, weights, tokenizer) plus `fineloop_training.json` saying what ran; a LoRA
run is merged first, so serving never needs PEFT.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import fineloop
from fineloop.data.snapshot_io import read_meta
from fineloop.errors import Invalid
from fineloop.runtime import device, is_main_process, supports_bf16
from fineloop.tasks.base import JobCancelled, ProgressSink
from fineloop.tasks.ner.align import Encoded, encode, require_fast
from fineloop.tasks.ner.config import NerTrainConfig, as_config
from fineloop.tasks.ner.train_data import read_options, read_split
from fineloop.tasks.ner.train_model import add_lora, load_model, merged, window_length
from fineloop.tasks.ner.train_trainer import (
    SinkCallback,
    WeightedTrainer,
    argmax_logits,
    class_weights,
    metric_function,
)

RECORD = "fineloop_training.json"


def train(
    snapshot: Path,
    base_model: str,
    config: BaseModel,
    out_dir: Path,
    sink: ProgressSink,
) -> Path:
    from transformers import AutoTokenizer, set_seed

    settings = as_config(config)
    out_dir = Path(out_dir)
    options = read_options(snapshot)
    tags = options.tags()
    tag2id = {t: i for i, t in enumerate(tags)}
    train_texts = read_split(snapshot, "train")
    if not len(train_texts):
        raise Invalid("the snapshot's train split has no texts", field="snapshot")
    validation = read_split(snapshot, "validation")
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    require_fast(tokenizer, base_model)
    set_seed(settings.seed)  # the fresh head's initialisation
    model, kept_head = load_model(base_model, tags, sink.log)
    length = window_length(tokenizer, model, settings.max_length)
    rows = encode(
        tokenizer, train_texts.texts, train_texts.spans, tag2id, options.labelling, length
    )
    report_windows(sink, rows, len(train_texts), length)
    # Validation is always labelled "first": one tag per word, so its F1 counts entities
    # over words whatever the training labelling.
    held = encode(tokenizer, validation.texts, validation.spans, tag2id, "first", length)
    weights = class_weights(rows.rows["labels"], len(tags), settings.class_weight_power)
    if settings.lora:
        model = add_lora(model, settings.lora_r, settings.lora_alpha, settings.lora_dropout)
    bf16 = supports_bf16() if settings.bf16 == "auto" else settings.bf16
    sink.log(
        f"training on {len(train_texts)} texts ({rows.windows} windows of ≤{length} tokens), "
        f"validating on {len(validation)}; tags {', '.join(tags)}; "
        f"{'LoRA' if settings.lora else 'full'} fine-tuning in {'bf16' if bf16 else 'fp32'}"
    )
    work = out_dir / ".work"
    callback = SinkCallback(sink)
    try:
        trainer = make_trainer(
            model, tokenizer, rows, held, tags, weights, settings, work, bf16, callback
        )
        trainer.train()
        if callback.cancelled:
            raise JobCancelled("training was cancelled")
        record = stamp(snapshot, base_model, settings, tags, kept_head=kept_head, bf16=bf16)
        record |= outcome(trainer, rows, weights)
        if is_main_process():  # in a distributed run, rank 0 alone writes
            save(merged(trainer.model), tokenizer, out_dir, record)
    finally:
        if is_main_process():  # other ranks may not remove what rank 0 is still writing
            shutil.rmtree(work, ignore_errors=True)
    best = record.get("best_f1")
    sink.log(
        f"saved to {out_dir}" + (f" (best validation f1 {best:.4f})" if best is not None else "")
    )
    sink.progress(1.0, "saved")
    return out_dir


def report_windows(sink: ProgressSink, rows: Encoded, texts: int, length: int) -> None:
    """Say what windowing did and which span types the tag set lacks (they are skipped)."""
    if rows.split_texts:
        sink.log(
            f"{rows.split_texts} of {texts} texts are longer than {length} tokens: split into "
            "overlapping windows (nothing cut)"
        )
    if rows.unplaced:
        sink.log(
            f"{rows.unplaced} spans cover no word of their own (characters the tokenizer "
            "drops, or two spans in one word): not trained"
        )
    for label, count in sorted(rows.dropped_types.items()):
        sink.log(f"skipped {count} spans of type {label!r}: not one of the snapshot's types")


def make_trainer(
    model: Any,
    tokenizer: Any,
    rows: Encoded,
    held: Encoded,
    tags: list[str],
    weights: list[float],
    settings: NerTrainConfig,
    work: Path,
    bf16: bool,
    callback: SinkCallback,
) -> WeightedTrainer:
    """The Trainer: per-epoch validation, best epoch kept, early stopping."""
    from datasets import Dataset  # type: ignore[import-untyped]
    from transformers import DataCollatorForTokenClassification, EarlyStoppingCallback
    from transformers.trainer_callback import PrinterCallback

    validating = held.windows > 0
    per_epoch = "epoch" if validating else "no"
    args = training_args(settings, work, bf16, per_epoch)
    callbacks: list[Any] = [callback]
    if validating and settings.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(settings.early_stopping_patience))
    trainer = WeightedTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict(rows.rows),
        eval_dataset=Dataset.from_dict(held.rows) if validating else None,
        processing_class=tokenizer,
        data_collator=DataCollatorForTokenClassification(tokenizer),
        compute_metrics=metric_function(tags) if validating else None,
        preprocess_logits_for_metrics=argmax_logits if validating else None,
        callbacks=callbacks,
        class_weights=weights if settings.class_weight_power > 0 else None,
    )
    trainer.remove_callback(PrinterCallback)  # progress goes to the sink, not stdout
    return trainer


def training_args(settings: NerTrainConfig, work: Path, bf16: bool, strategy: str) -> Any:
    from transformers import TrainingArguments

    validating = strategy != "no"
    return TrainingArguments(
        output_dir=str(work),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps or -1,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_ratio,  # a float below 1 is a share of the steps
        bf16=bf16,
        use_cpu=device() == "cpu",
        seed=settings.seed,
        data_seed=settings.seed,
        eval_strategy=strategy,
        save_strategy=strategy,
        save_total_limit=2 if validating else None,  # the best and the last
        save_only_model=True,  # checkpoints are for picking the best, never for resuming
        load_best_model_at_end=validating,
        metric_for_best_model="f1" if validating else None,
        greater_is_better=True,
        label_names=["labels"],
        logging_steps=settings.logging_steps,
        logging_first_step=True,
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )


def stamp(
    snapshot: Path,
    base: str,
    settings: NerTrainConfig,
    tags: list[str],
    *,
    kept_head: bool,
    bf16: bool,
) -> dict[str, Any]:
    """What the artifact needs to be understood later: config, versions, data, precision."""
    return {
        "task": "ner",
        "fineloop_version": fineloop.__version__,
        "base_model": base,
        "head": "kept" if kept_head else "new",
        "snapshot_id": read_meta(snapshot).get("id", Path(snapshot).name),
        "config": settings.model_dump(mode="json"),
        "tags": tags,
        "precision": "bf16" if bf16 else "fp32",
    }


def outcome(trainer: Any, rows: Encoded, weights: list[float]) -> dict[str, Any]:
    """What the run did: steps, windows, class weights, each validation, the best F1."""
    state = trainer.state
    evaluations = [
        {"epoch": e.get("epoch"), "f1": e["eval_f1"], "loss": e.get("eval_loss")}
        for e in state.log_history
        if "eval_f1" in e
    ]
    losses = [e["train_loss"] for e in state.log_history if "train_loss" in e]
    return {
        "steps": state.global_step,
        "windows": rows.windows,
        "split_texts": rows.split_texts,
        "unplaced_spans": rows.unplaced,
        "class_weights": weights,
        "evaluations": evaluations,
        "best_f1": state.best_metric,
        "train_loss": losses[-1] if losses else None,
    }


def save(model: Any, tokenizer: Any, out_dir: Path, record: dict[str, Any]) -> None:
    """Model, tokenizer and record into out_dir; the record last, once the rest is there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    (out_dir / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
