"""The steps of the training pipeline that are more than a call: snapshot, evaluation, gate.

Kept apart from `train.py` so the pipeline reads as a list of steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fineloop import artifacts
from fineloop.config import Settings
from fineloop.policies import TrainingPolicy
from fineloop.registry.gate import GateDecision, decide, improvement_interval
from fineloop.snapshots import build_and_publish, built_snapshot, get_snapshot
from fineloop.store import Store
from fineloop.store.schema import ModelVersion, Project
from fineloop.tasks.base import BuiltSnapshot, Evaluation, Task

SPLIT = "test"
SAMPLES = 8  # held-out examples a version keeps with every model's output


def snapshot_for(
    store: Store,
    settings: Settings,
    project: Project,
    task: Task,
    *,
    seed: int,
    label: str,
    reuse: str | None = None,
    train_overrides: Mapping[str, Any] | None = None,
) -> BuiltSnapshot:
    """Build (or reuse) the project's snapshot; the builder mines with the champion.
    `reuse` names a snapshot already recorded (a retried job trains on the same data);
    `train_overrides` are the job's, which a builder reading `train` sees too."""
    if reuse is not None:
        with store.read() as session:
            row = get_snapshot(session, project, reuse)
        return built_snapshot(row, settings)
    row = build_and_publish(
        store, settings, project.name, seed=seed, label=label, train_overrides=train_overrides
    )
    return built_snapshot(row, settings)


@dataclass(frozen=True)
class Comparison:
    """Base, champion and candidate evaluated on the same held-out split."""

    primary: str
    base: Evaluation
    champion: Evaluation
    candidate: Evaluation
    base_version: str
    champion_version: str

    def as_metrics(self, decision: GateDecision) -> dict[str, Any]:
        """What a version records: every model's metrics, side by side, and the interval."""
        interval = decision.interval
        return {
            "primary": self.primary,
            "higher_is_better": self.candidate.higher_is_better,
            "split": SPLIT,
            "examples": len(self.candidate.per_example),
            "candidate": self.candidate.metrics,
            "champion": self.champion.metrics,
            "base": self.base.metrics,
            "champion_version": self.champion_version,
            "base_version": self.base_version,
            "interval": None if interval is None else decision.as_dict()["interval"],
        } | ({"samples": samples} if (samples := self.side_by_side()) else {})

    def side_by_side(self) -> list[dict[str, Any]]:
        """The candidate's samples with the base's and champion's outputs on the same
        examples (matched by input, so a family that samples differently never pairs
        unrelated rows); at most SAMPLES of them."""
        rows = []
        for index, sample in enumerate(self.candidate.samples[:SAMPLES]):
            outputs = {"candidate": sample.get("output")}
            for label, other in (("base", self.base), ("champion", self.champion)):
                theirs = other.samples[index] if index < len(other.samples) else {}
                same = theirs.get("input") == sample.get("input")
                outputs[label] = theirs.get("output") if same else None
            rows.append(
                {
                    "input": sample.get("input"),
                    "reference": sample.get("reference"),
                    "outputs": outputs,
                }
            )
        return rows


def evaluate_all(
    task: Task,
    snapshot: Path,
    base: ModelVersion,
    champion: ModelVersion,
    candidate: Path,
    *,
    settings: Settings | None = None,
) -> Comparison:
    """Evaluate each distinct model once (the champion often is the base model). With
    `settings`, versions on a URL artifact root are read from their local cached copies."""

    def path(version: ModelVersion) -> str:
        uri = version.artifact_uri
        return uri if settings is None else artifacts.fetch(settings, uri)

    base_eval = task.evaluate(path(base), snapshot, SPLIT)
    champion_eval = (
        base_eval if champion.id == base.id else task.evaluate(path(champion), snapshot, SPLIT)
    )
    candidate_eval = task.evaluate(str(candidate), snapshot, SPLIT)
    return Comparison(
        primary=candidate_eval.primary,
        base=base_eval,
        champion=champion_eval,
        candidate=candidate_eval,
        base_version=f"v{base.number}",
        champion_version=f"v{champion.number}",
    )


def gate_decision(comparison: Comparison, policy: TrainingPolicy) -> GateDecision:
    """Paired bootstrap of the candidate's improvement on the primary metric (in the
    direction its evaluation reports), then the margin."""
    candidate = comparison.candidate.per_example
    champion = comparison.champion.per_example
    if not candidate or len(candidate) != len(champion):
        reason = (
            f"{comparison.primary}: no paired held-out scores to compare "
            f"(candidate {len(candidate)}, champion {len(champion)}), so the champion stays"
        )
        return GateDecision(False, reason, comparison.primary, policy.gate_margin, None)
    higher = comparison.candidate.higher_is_better
    interval = improvement_interval(
        candidate,
        champion,
        higher_is_better=higher,
        samples=policy.bootstrap_samples,
        seed=policy.seed,
        candidate_parts=comparison.candidate.ratio_parts,
        champion_parts=comparison.champion.ratio_parts,
    )
    return decide(comparison.primary, interval, policy.gate_margin, higher)
