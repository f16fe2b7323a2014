"""Refit after the gate: the candidate's recipe once more, on train + validation.

The validation split picked how long the candidate trained (early stopping kept its best
checkpoint); once the candidate has passed the gate on the test split, the validation
split has done its job, and its examples can teach the model too. A project with
`TrainingPolicy.refit` then trains once more from the same starting model, on train and
validation together, with the same settings and as far as the candidate's kept checkpoint
went (the family reads that from the candidate's folder; embedding: the same share of the
same schedule), evaluates the result on the same test split, and registers it as the
version that serves — unless its primary test score is worse than the gated candidate's
point estimate, in which case the candidate is registered and the record says why.

Nothing here registers anything: the pipeline's one final transaction does (train.py), so
a crash or cancel during the refit leaves no version and the champion serving. A family
without the capability (`Task.refit` answers None) registers the candidate, logged.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fineloop import artifacts
from fineloop.config import Settings
from fineloop.jobs.sink import Stage
from fineloop.jobs.training_steps import SPLIT, Comparison
from fineloop.registry.gate import GateDecision
from fineloop.store.schema import ModelVersion
from fineloop.tasks.base import JobCancelled, ProgressSink, Task
from fineloop.tasks.encode_counts import counting, report


@dataclass(frozen=True)
class Chosen:
    """The folder to register, its metrics, and the `refit` record (None: refit is off)."""

    folder: Path
    metrics: dict[str, Any]
    record: dict[str, Any] | None = None
    config: dict[str, Any] | None = None


def refit_after_gate(
    task: Task,
    settings: Settings,
    sink: ProgressSink,
    *,
    snapshot: Path,
    champion: ModelVersion,
    trained: Path,
    train_config: dict[str, Any],
    comparison: Comparison,
    decision: GateDecision,
    out_dir: Path,
    stage: tuple[float, float],
) -> Chosen:
    """Refit the gated candidate (it passed); return what to register: the refit, or the
    candidate when the family made no refit or the refit tested worse on the test split.
    `stage` is the slice of the job's progress the refit and its evaluation take."""
    primary = comparison.primary
    gated = comparison.candidate
    kept = Chosen(trained, comparison.as_metrics(decision))
    record: dict[str, Any] = {"of": "candidate", f"candidate_{primary}": gated.metrics[primary]}
    started = time.perf_counter()
    refitted = task.refit(
        snapshot,
        artifacts.fetch(settings, champion.artifact_uri),  # the run's own starting model
        task.train_config(train_config),
        trained,
        out_dir,
        Stage(sink, stage[0], _at(stage, 0.85), "refitting on train + validation"),
    )
    sink.metric("phase_seconds/refit", 0, round(time.perf_counter() - started, 3))
    if sink.cancelled():
        raise JobCancelled
    if refitted is None:
        why = f"the {task.name} family made no refit; the gated candidate is registered"
        sink.log(f"refit: {why}")
        return dataclasses.replace(kept, record=record | {"registered": "candidate", "reason": why})

    sink.progress(_at(stage, 0.85), "evaluating the refit")
    started = time.perf_counter()
    with counting() as counts:
        evaluation = task.evaluate(str(refitted.folder), snapshot, SPLIT)
    report(sink, counts)
    sink.metric("phase_seconds/evaluate_refit", 0, round(time.perf_counter() - started, 3))
    if sink.cancelled():
        raise JobCancelled
    record |= refitted.summary | {f"refit_{primary}": evaluation.metrics[primary]}
    record |= {"candidate": gated.metrics, "refit": evaluation.metrics}
    if evaluation.improvement(gated) < 0:
        why = (
            f"the refit's test {primary} {evaluation.metrics[primary]:.4f} is worse than the gated "
            f"candidate's {gated.metrics[primary]:.4f}: the candidate is registered"
        )
        sink.log(f"refit: {why}")
        if refitted.folder.resolve() != trained.resolve():  # never registered
            shutil.rmtree(refitted.folder, ignore_errors=True)
        return dataclasses.replace(kept, record=record | {"registered": "candidate", "reason": why})
    why = (
        f"the refit's test {primary} {evaluation.metrics[primary]:.4f} is no worse than the "
        f"gated candidate's {gated.metrics[primary]:.4f}: the refit is registered"
    )
    sink.log(f"refit: {why}")
    served = dataclasses.replace(comparison, candidate=evaluation)
    metrics = served.as_metrics(decision)  # the served model's scores; the gate's interval
    record |= {"registered": "refit", "reason": why}
    return Chosen(refitted.folder, metrics, record, {"refit": refitted.summary})


def _at(stage: tuple[float, float], share: float) -> float:
    return stage[0] + (stage[1] - stage[0]) * share
