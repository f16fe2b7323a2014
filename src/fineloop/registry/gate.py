"""The promotion gate: a candidate replaces the champion only when it is surely better.

"Surely" means the lower end of a paired bootstrap 95% interval of the candidate's
improvement over the champion on the primary metric, over the same held-out examples,
lies above a margin. The improvement is candidate - champion when higher is better
(nDCG, accuracy) and champion - candidate when lower is better (loss, perplexity), so a
gate on a loss never promotes the worse model.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    samples: int


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    metric: str
    margin: float
    interval: Interval | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_bootstrap(
    candidate: list[float], champion: list[float], *, samples: int = 1000, seed: int = 13
) -> Interval:
    """95% percentile interval of mean(candidate - champion), resampling examples."""
    if len(candidate) != len(champion) or not candidate:
        raise ValueError("both models need scores on the same, non-empty list of examples")
    differences = [c - b for c, b in zip(candidate, champion, strict=True)]
    n = len(differences)
    rng = random.Random(seed)
    means = sorted(sum(differences[rng.randrange(n)] for _ in range(n)) / n for _ in range(samples))
    low = means[int(0.025 * (samples - 1))]
    high = means[round(0.975 * (samples - 1))]
    return Interval(mean=sum(differences) / n, low=low, high=high, samples=samples)


def improvement_interval(
    candidate: list[float],
    champion: list[float],
    *,
    higher_is_better: bool = True,
    samples: int = 1000,
    seed: int = 13,
) -> Interval:
    """The paired bootstrap interval of how much better the candidate is, in the metric's
    own units, whichever way the metric points."""
    better, worse = (candidate, champion) if higher_is_better else (champion, candidate)
    return paired_bootstrap(better, worse, samples=samples, seed=seed)


def decide(
    metric: str, interval: Interval, margin: float, higher_is_better: bool = True
) -> GateDecision:
    """Pass when the improvement interval's lower end is above the margin."""
    difference = "candidate - champion" if higher_is_better else "champion - candidate"
    metric_note = metric if higher_is_better else f"{metric} (lower is better)"
    if interval.low > margin:
        reason = (
            f"{metric_note}: {difference} = {interval.mean:+.4f}, 95% CI "
            f"[{interval.low:+.4f}, {interval.high:+.4f}], lower bound above margin {margin:+.4f}"
        )
        return GateDecision(True, reason, metric, margin, interval)
    reason = (
        f"{metric_note}: {difference} = {interval.mean:+.4f}, 95% CI "
        f"[{interval.low:+.4f}, {interval.high:+.4f}]; lower bound not above margin "
        f"{margin:+.4f}, so the champion stays"
    )
    return GateDecision(False, reason, metric, margin, interval)
