"""The pieces `train` hands transformers' `Trainer`: class weights and the weighted loss,
the validation metric (entity-level F1 with seqeval), and the callback reporting to the
job's sink.

Class weights: a tag seen `c` times among the labelled train tokens weighs `c^-power`,
scaled so the average labelled token weighs 1 (the loss keeps its scale and the learning
rate its meaning). power 0 is the plain loss; 1 is inverse frequency. A tag never seen
counts as seen once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import (
    EvalPrediction,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from fineloop.tasks.base import ProgressSink, stop_if_cancelled
from fineloop.tasks.ner.align import IGNORE


def class_weights(labels: Sequence[Sequence[int]], n_tags: int, power: float) -> list[float]:
    """One weight per tag id (see the module doc); all 1.0 when power is 0."""
    counts = np.ones(n_tags, dtype=np.float64)
    for row in labels:
        for label in row:
            if label != IGNORE:
                counts[label] += 1
    counts -= 1
    seen = np.maximum(counts, 1.0)
    raw = seen**-power
    total = counts.sum()
    mean = float((counts * raw).sum() / total) if total else 1.0
    return [float(w) for w in raw / mean]


class WeightedTrainer(Trainer):
    """`Trainer` whose loss is cross-entropy weighted per tag (None: the model's own loss)."""

    def __init__(self, *args: Any, class_weights: Sequence[float] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.class_weights = None if class_weights is None else torch.tensor(class_weights)

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        if self.class_weights is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        features = {k: v for k, v in inputs.items() if k != "labels"}
        labels = inputs["labels"]
        outputs = model(**features)
        logits = outputs.logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            labels.reshape(-1),
            weight=self.class_weights.to(logits.device),
            ignore_index=IGNORE,
        )
        return (loss, outputs) if return_outputs else loss


def argmax_logits(logits: Any, labels: Any) -> Any:
    """Keep only the chosen tag per token during evaluation (not every tag's logit)."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


def tag_sequences(
    predictions: np.ndarray, labels: np.ndarray, tags: Sequence[str]
) -> tuple[list[list[str]], list[list[str]]]:
    """Gold and predicted tags of each window, over its labelled tokens only."""
    gold: list[list[str]] = []
    found: list[list[str]] = []
    for predicted_row, label_row in zip(predictions, labels, strict=True):
        keep = label_row != IGNORE
        gold.append([tags[int(i)] for i in label_row[keep]])
        found.append([tags[int(i)] for i in predicted_row[keep]])
    return gold, found


def metric_function(tags: Sequence[str]) -> Any:
    """`compute_metrics` for the Trainer: entity-level precision, recall and F1."""
    from seqeval.metrics import (  # type: ignore[import-untyped]
        f1_score,
        precision_score,
        recall_score,
    )

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        gold, found = tag_sequences(
            np.asarray(prediction.predictions), np.asarray(prediction.label_ids), tags
        )
        return {
            "f1": float(f1_score(gold, found, zero_division=0)),
            "precision": float(precision_score(gold, found, zero_division=0)),
            "recall": float(recall_score(gold, found, zero_division=0)),
        }

    return compute


class SinkCallback(TrainerCallback):
    """Forwards progress, the training loss and each validation to the sink; stops the
    run (saving nothing more) once its cancel was requested."""

    def __init__(self, sink: ProgressSink) -> None:
        self.sink = sink
        self.cancelled = False

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        total = max(state.max_steps, 1)
        self.sink.progress(
            min(state.global_step / total, 1.0) * 0.95, f"step {state.global_step}/{total}"
        )
        if stop_if_cancelled(self.sink, control):
            self.cancelled = True

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        if logs and isinstance(logs.get("loss"), int | float):
            self.sink.metric("loss", state.global_step, float(logs["loss"]))
            self.sink.log(f"step {state.global_step}/{state.max_steps}: loss {logs['loss']:.4f}")

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        if not metrics:
            return
        for name in ("eval_f1", "eval_precision", "eval_recall", "eval_loss"):
            if isinstance(metrics.get(name), int | float):
                self.sink.metric(name, state.global_step, float(metrics[name]))
        epoch = f"epoch {state.epoch:.0f}" if state.epoch is not None else "evaluation"
        self.sink.log(
            f"{epoch}: validation f1 {metrics.get('eval_f1', 0.0):.4f}, "
            f"loss {metrics.get('eval_loss', float('nan')):.4f}"
        )
