"""Fine-tune a sentence-transformers model on a snapshot: load → trainer → fit → save.

The library's `SentenceTransformerTrainer` does the work; this module chooses the loss and
its columns, early-stops on the validation split's nDCG@10 (keeping the best checkpoint),
reports progress to a sink, and saves the model with a `fineloop.json` stamp.

Precision rule ("auto"): train with bf16 autocast when the device supports it. The shipped
model is then scored on validation in fp32 (reloaded from disk, as it will be served). If
that score is below the base model's fp32 validation score, bf16 may be to blame, so the run
is repeated once in fp32 and the better of the two (fp32-measured) is kept. An explicit
"bf16" or "fp32" is never second-guessed.

Corpus vectors: the starting model is scored with its vectors from the model's vector file
when serving or mining made them (corpus_vectors.py). The trained model's are taken from
the trainer's validation of the checkpoint that was kept (fp32 runs; checked against a
probe re-encoded by the saved model) and written to the saved model's file, so scoring it
here and evaluating it in the job encode no catalog text again. How many texts were
encoded and reused goes to the sink (`encoded/validation`, `reused/validation`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import DatasetDict  # type: ignore[import-untyped]
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer
from transformers import EarlyStoppingCallback, TrainerCallback

import fineloop
from fineloop.errors import Invalid
from fineloop.runtime import (
    device,
    is_main_process,
    last_checkpoint,
    rank_zero_decides,
    supports_bf16,
)
from fineloop.tasks.base import JobCancelled, ProgressSink
from fineloop.tasks.embedding.batching import settle_batch
from fineloop.tasks.embedding.config import EmbeddingTrainConfig
from fineloop.tasks.embedding.corpus_vectors import encode_texts, keep, vectors_folder
from fineloop.tasks.embedding.curriculum import curriculum_rows
from fineloop.tasks.embedding.evaluate import (
    PRIMARY,
    PerQueryEvaluator,
    ir_evaluator,
    read_corpus,
    read_pairs,
    short_metrics,
    snapshot_info,
)
from fineloop.tasks.embedding.fit import BestCorpus, SinkCallback, fit_run
from fineloop.tasks.embedding.losses import Negatives, get_loss
from fineloop.tasks.encode_counts import counting, record, report

VALIDATION = "validation"
PROBE = 32  # texts the saved model re-encodes to check the trainer's vectors are its own
PROBE_MIN_COSINE = 0.99999


@dataclass
class Run:
    """One training run, saved to `folder`, scored on validation in fp32 (None: no split)."""

    folder: Path
    precision: str
    score: float | None
    state: dict[str, Any]


def train(
    snapshot: Path,
    base_model: str,
    config: BaseModel,
    out_dir: Path,
    sink: ProgressSink,
    *,
    extra_callbacks: Sequence[TrainerCallback] = (),
) -> Path:
    """`extra_callbacks` join the Trainer's (a refit's stop at the kept epoch, refit.py)."""
    settings = as_config(config)
    spec = get_loss(settings.loss)
    pairs = read_pairs(snapshot)
    if "train" not in pairs or len(pairs["train"]) == 0:
        raise Invalid("the snapshot's train split is empty: nothing to learn", field="snapshot")
    corpus = read_corpus(snapshot)
    validation = None
    if VALIDATION in pairs and len(pairs[VALIDATION]) > 0:
        validation = ir_evaluator(pairs[VALIDATION], corpus, VALIDATION)
    positives = group_positives(pairs)
    negatives = Negatives(sorted(set(corpus.values())), positives, settings.seed)
    out_dir = Path(out_dir)
    work = out_dir / ".work"
    vectors = vectors_folder(snapshot)
    fitted, arranged = settings, dict[str, Any]()  # settled once the base model is loaded

    def attempt(bf16: bool, model: SentenceTransformer) -> Run:
        label = "bf16" if bf16 else "fp32"
        batch = fitted.batch_size
        sink.log(f"training {fitted.loss} on {len(rows)} examples, batch {batch} ({label})")
        callback = SinkCallback(sink, f"eval_{VALIDATION}_cosine_")
        callbacks = [callback, *early_stopping(fitted, validation), *extra_callbacks]
        best = None
        if validation is not None and not bf16 and vectors is not None:
            best = BestCorpus(validation, f"eval_{VALIDATION}_cosine_{PRIMARY}")
            callbacks.append(best)
            validation.keep_corpus = True
        checkpoints = work / f"checkpoints-{label}"
        resume = last_checkpoint(checkpoints)  # left by a killed attempt of the same job
        if resume is not None:
            sink.log(f"resuming from {resume.name}, saved by an earlier attempt")
        try:
            state = fit_run(
                model,
                get_loss(fitted.loss),
                fitted,
                rows,
                validation,
                checkpoints,
                bf16=bf16,
                callbacks=callbacks,
                resume=resume,
                logs=out_dir / "logs" / label,  # kept: published with the model folder
            )
        finally:
            if validation is not None:
                validation.keep_corpus, validation.last_corpus = False, None
        if callback.cancelled:
            raise JobCancelled("training was cancelled")
        if not is_main_process():  # other DDP ranks keep nothing: rank 0 saves and scores
            return Run(work, label, None, state)
        folder = work / f"model-{label}"
        model.save(str(folder))
        saved = load_model(folder)
        if best is not None and validation is not None:
            sink.log(trained_vectors(best, state, saved, folder, vectors, validation))
        return Run(folder, label, score(validation, saved, folder, vectors), state)

    with counting() as tally:  # the corpus texts scoring encoded and reused, for the job
        try:
            model = load_base(base_model, settings)
            base_score = (
                score(validation, model, base_model, vectors) if is_main_process() else None
            )
            if base_score is not None:
                sink.metric("eval_ndcg@10", 0, base_score)
                sink.log(f"base model: validation {PRIMARY} {base_score:.4f}")
            split, arranged["curriculum"] = curriculum_rows(
                settings.curriculum,
                pairs["train"],
                seed=settings.seed,
                model=model,
                model_path=base_model,
                corpus=list(corpus.values()),
                positives=positives,
                folder=vectors,
            )
            rows = spec.prepare(split, negatives, settings.hard_negatives)
            fitted, arranged["batch"], chosen = settle_batch(settings, rows, model, work)
            if chosen is not None:
                sink.log(chosen)
            run = attempt(resolve_precision(settings.precision) == "bf16", model)
            tried = {run.precision: run.score}
            rerun = settings.precision == "auto" and run.precision == "bf16"
            if rank_zero_decides(rerun and below(run, base_score)):
                sink.log(
                    f"bf16 run ended below the base model ({run.score} < {base_score}): fp32 rerun"
                )
                retry = attempt(False, load_base(base_model, settings))
                tried[retry.precision] = retry.score
                run = retry if (retry.score or 0.0) > (run.score or 0.0) else run
            if is_main_process():
                info = stamp(snapshot, base_model, settings, run, base_score)
                info["validation"]["runs"] = tried
                info.update(arranged)  # the curriculum order and the batch size used
                publish(run, out_dir, info)
        except JobCancelled:
            if is_main_process():  # a cancel is final: nothing will resume from checkpoints
                shutil.rmtree(work, ignore_errors=True)
            raise
        finally:
            # Once published (other ranks may still read checkpoints until then). A failed run
            # keeps them: its job, if retried, resumes; the job runner removes the folder.
            if is_main_process() and (out_dir / "fineloop.json").is_file():
                shutil.rmtree(work, ignore_errors=True)  # checkpoints, and the run not kept
    report(sink, tally)
    sink.progress(1.0, "saved")
    return out_dir


def as_config(config: BaseModel) -> EmbeddingTrainConfig:
    if isinstance(config, EmbeddingTrainConfig):
        return config
    return EmbeddingTrainConfig.parse(config.model_dump())


def group_positives(pairs: DatasetDict) -> dict[str, set[str]]:
    """Query -> every item text judged right for its paraphrase group: never a negative."""
    by_group: dict[str, set[str]] = {}
    group_of: dict[str, str] = {}
    for split in pairs.values():
        for anchor, group, positive in zip(
            split["anchor"], split["query_group"], split["positive"], strict=True
        ):
            by_group.setdefault(group, set()).add(positive)
            group_of[anchor] = group
    return {anchor: by_group[group] for anchor, group in group_of.items()}


def resolve_precision(wanted: str) -> str:
    if wanted == "auto":
        return "bf16" if supports_bf16() else "fp32"
    return wanted


def load_base(base_model: str, config: EmbeddingTrainConfig) -> SentenceTransformer:
    try:
        model = SentenceTransformer(base_model, device=device())
    except (OSError, ValueError) as error:
        raise Invalid(
            f"cannot load base model {base_model!r}: {error}", field="base_model"
        ) from None
    model.model_card_data.local_files_only = True  # the card must not look models up online
    if config.max_seq_length:
        model.max_seq_length = config.max_seq_length
    return model


def load_model(folder: Path) -> SentenceTransformer:
    return SentenceTransformer(str(folder), device=device())


def score(
    validation: PerQueryEvaluator | None,
    model: SentenceTransformer,
    model_path: str | Path,
    vectors: Path | None,
) -> float | None:
    """Validation nDCG@10 of a frozen model loaded from `model_path`."""
    if validation is None:
        return None
    results = validation.run(model, model_path=model_path, folder=vectors, phase=VALIDATION)
    return short_metrics(results, VALIDATION)[PRIMARY]


def trained_vectors(
    best: BestCorpus,
    state: dict[str, Any],
    saved: SentenceTransformer,
    folder: Path,
    vectors: Path | None,
    validation: PerQueryEvaluator,
) -> str:
    """Keep the corpus vectors of the trainer's best validation as the saved model's, if
    that is the checkpoint it kept and the saved model re-encodes a probe of evenly spaced
    texts to the same vectors. Returns what happened, for the job's log."""
    if best.vectors is None or best.value is None or best.value != state.get("best_metric"):
        return "validation: the kept checkpoint's corpus vectors were not captured"
    texts = validation.texts()
    picks = np.unique(np.linspace(0, len(texts) - 1, num=min(PROBE, len(texts))).astype(int))
    fresh = encode_texts(saved, [texts[i] for i in picks])
    captured = best.vectors[picks]
    captured = captured / np.maximum(np.linalg.norm(captured, axis=1, keepdims=True), 1e-12)
    agreement = float(np.min(np.sum(fresh * captured, axis=1)))
    record(VALIDATION, encoded=len(picks), reused=0, seconds=0.0)
    if agreement < PROBE_MIN_COSINE or not keep(saved, folder, vectors, texts, best.vectors):
        return f"validation: trainer's corpus vectors not kept (probe cosine {agreement:.6f})"
    return (
        f"validation: the saved model's {len(texts):,} corpus vectors taken from the trainer's "
        f"best evaluation (probe of {len(picks)} texts: cosine >= {agreement:.6f})"
    )


def below(run: Run, base: float | None) -> bool:
    return run.score is not None and base is not None and run.score < base


def early_stopping(
    config: EmbeddingTrainConfig, validation: PerQueryEvaluator | None
) -> list[EarlyStoppingCallback]:
    if validation is None or config.early_stopping_patience is None:
        return []
    return [EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience)]


def stamp(
    snapshot: Path,
    base_model: str,
    config: EmbeddingTrainConfig,
    run: Run,
    base_score: float | None,
) -> dict[str, Any]:
    """What the artifact needs to be understood later: config, versions, data, outcome."""
    return {
        "task": "embedding",
        "fineloop_version": fineloop.__version__,
        "base_model": base_model,
        "snapshot_id": snapshot_info(snapshot).get("id", Path(snapshot).name),
        "config": config.model_dump(mode="json"),
        "precision": run.precision,
        "validation": {f"base_{PRIMARY}": base_score, PRIMARY: run.score},
        "trainer": run.state,
    }


def publish(run: Run, out_dir: Path, info: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for entry in run.folder.iterdir():
        target = out_dir / entry.name
        if target.is_dir():  # left by an earlier attempt killed while publishing
            shutil.rmtree(target)
        target.unlink(missing_ok=True)
        shutil.move(str(entry), str(target))
    (out_dir / "fineloop.json").write_text(json.dumps(info, indent=2, sort_keys=True))
