"""One call of `SentenceTransformerTrainer.train()`, wired to fineloop: the training
arguments a config implies, the callback that reports to a `ProgressSink`, and whether
this machine can train in bf16.

Under torchrun (see `fineloop.jobs.distributed`) every rank runs the same training; the
Trainer sets up DDP from the environment. `fineloop.runtime.is_main_process` says who writes
files and `rank_zero_decides` keeps every rank on the same branch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset  # type: ignore[import-untyped]
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.base.sampler import BatchSamplers
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from fineloop.errors import Invalid
from fineloop.runtime import device, world_size
from fineloop.tasks.base import ProgressSink
from fineloop.tasks.embedding.config import EmbeddingTrainConfig
from fineloop.tasks.embedding.curriculum import ordered_sampler
from fineloop.tasks.embedding.evaluate import PRIMARY, PerQueryEvaluator
from fineloop.tasks.embedding.losses import LossSpec, build_loss


class SinkCallback(TrainerCallback):
    """Forwards progress, losses and validation metrics to the sink; stops on cancel."""

    def __init__(self, sink: ProgressSink, eval_prefix: str) -> None:
        self.sink = sink
        self.eval_prefix = eval_prefix
        self.cancelled = False

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        total = max(state.max_steps, 1)
        self.sink.progress(min(state.global_step / total, 1.0), f"step {state.global_step}/{total}")
        if self.sink.cancelled():
            self.cancelled = True
            control.should_training_stop = True
            control.should_save = False
            control.should_evaluate = False

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self.cancelled:  # no evaluation or checkpoint after a cancel
            control.should_save = False
            control.should_evaluate = False

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        if logs and "loss" in logs:
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
        for key, value in (metrics or {}).items():
            if key.startswith(self.eval_prefix):
                name = "eval_" + key.removeprefix(self.eval_prefix)
                self.sink.metric(name, state.global_step, float(value))
        primary = (metrics or {}).get(self.eval_prefix + PRIMARY)
        if primary is not None:
            self.sink.log(f"step {state.global_step}: validation {PRIMARY} {primary:.4f}")
        if self.sink.cancelled():  # e.g. a search pruned this trial on that very score
            self.cancelled = True
            control.should_training_stop = True
            control.should_save = False


class BestCorpus(TrainerCallback):
    """Keeps the corpus vectors of the best validation so far (the evaluator encodes them
    with `keep_corpus`): the checkpoint `load_best_model_at_end` brings back encoded them,
    so the saved model's catalog need not be encoded again (train.py checks a probe)."""

    def __init__(self, validation: PerQueryEvaluator, metric: str) -> None:
        self.validation = validation
        self.metric = metric
        self.value: float | None = None
        self.vectors: np.ndarray | None = None

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        found, self.validation.last_corpus = self.validation.last_corpus, None
        value = (metrics or {}).get(self.metric)
        if found is None or value is None:
            return
        if self.value is None or value > self.value:  # the Trainer's rule for a new best
            self.value = float(value)
            self.vectors = found.detach().float().cpu().numpy()


def arguments(
    config: EmbeddingTrainConfig, spec: LossSpec, checkpoints: Path, *, bf16: bool, evaluate: bool
) -> SentenceTransformerTrainingArguments:
    """Evaluate and checkpoint together (per epoch, or every eval_steps), keep the best."""
    strategy = "no" if not evaluate else ("steps" if config.eval_steps else "epoch")
    batch = fixed_batch_size(config)
    return SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        bf16=bf16,
        use_cpu=device() == "cpu",
        seed=config.seed,
        data_seed=config.seed,
        batch_sampler=batch_sampler(config, spec),
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=config.eval_steps,
        save_steps=config.eval_steps or 500,  # used only with eval_steps
        save_total_limit=2,
        save_only_model=False,  # optimizer and RNG state too: a retried job resumes
        load_best_model_at_end=evaluate,
        metric_for_best_model=f"eval_validation_cosine_{PRIMARY}" if evaluate else None,
        greater_is_better=True,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        report_to=trainer_reporters(config) or "none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )


def fixed_batch_size(config: EmbeddingTrainConfig) -> int:
    """The batch size to train with: `auto` is settled before fitting (batching.py)."""
    if config.batch_size == "auto":
        raise ValueError("batch_size auto must be resolved before fitting (batching.py)")
    return config.batch_size


def batch_sampler(config: EmbeddingTrainConfig, spec: LossSpec) -> Any:
    """The library's samplers (no repeated texts in a batch for in-batch negatives), or,
    with a curriculum, the same rules over the rows' own easy-to-hard order."""
    if config.curriculum != "off":
        return ordered_sampler(spec.in_batch_negatives)
    return BatchSamplers.NO_DUPLICATES if spec.in_batch_negatives else BatchSamplers.BATCH_SAMPLER


def trainer_reporters(config: EmbeddingTrainConfig) -> list[str]:
    """The trackers the Trainer sets up itself; TensorBoard is added by `fit_run` instead,
    so that its event files land in the job's folder rather than the checkpoint folder,
    which is deleted once the model is published."""
    return [name for name in config.report_to if name != "tensorboard"]


def tensorboard_callback(logs: Path) -> TrainerCallback:
    """transformers' TensorBoard callback, writing its event files to `logs`."""
    from transformers.integrations.integration_utils import TensorBoardCallback

    callback = TensorBoardCallback()  # type: ignore[no-untyped-call]
    callback.logging_dir = str(logs)
    return callback


def fit_run(
    model: SentenceTransformer,
    spec: LossSpec,
    config: EmbeddingTrainConfig,
    rows: Dataset,
    validation: PerQueryEvaluator | None,
    checkpoints: Path,
    *,
    bf16: bool,
    callbacks: list[TrainerCallback],
    resume: Path | None = None,
    logs: Path | None = None,
) -> dict[str, Any]:
    """Train in place (the best checkpoint is loaded back into `model`); return a summary
    of the trainer state for the artifact's stamp. `resume`: a checkpoint to go on from;
    `logs`: where TensorBoard writes, when the config reports to it."""
    world = world_size()
    batch = fixed_batch_size(config)
    if world > 1 and len(rows) < world * batch:  # DDP drops incomplete batches
        raise Invalid(
            f"{world} training processes with batch_size {batch} need at least "
            f"{world * batch} training examples, the snapshot has {len(rows)}: "
            "use fewer processes or a smaller batch_size",
            field="nproc",
        )
    args = arguments(config, spec, checkpoints, bf16=bf16, evaluate=validation is not None)
    if "tensorboard" in config.report_to:
        callbacks = [*callbacks, tensorboard_callback(logs or checkpoints / "runs")]
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        loss=build_loss(spec, model, config),
        evaluator=validation,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # progress goes to the sink, not stdout
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    state = trainer.state
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    return {
        "global_step": state.global_step,
        "max_steps": state.max_steps,
        "best_step": getattr(state, "best_global_step", None),
        "best_metric": state.best_metric,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "log_history": state.log_history,
        "resumed_from": resume.name if resume is not None else None,
        "world_size": args.world_size,
    }
