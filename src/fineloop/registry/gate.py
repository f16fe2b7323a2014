"""The promotion gate: a candidate replaces the champion only when it is surely better.

"Surely" means the lower end of a paired bootstrap 95% interval of the candidate's
improvement over the champion on the primary metric, over the same held-out examples,
lies above a margin. The improvement is candidate - champion when higher is better
(nDCG, accuracy) and champion - candidate when lower is better (loss, perplexity), so a
gate on a loss never promotes the worse model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Indices drawn per block of resamples: ~2 MB of int64, cache-sized (measured fastest).
_BLOCK_ELEMENTS = 250_000


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
    """95% percentile interval of mean(candidate - champion), resampling examples.

    Vectorised with numpy: resamples are drawn in blocks of index rows (about
    ``_BLOCK_ELEMENTS`` indices at a time, small enough to stay in cache, which is faster
    than one huge matrix and keeps memory flat), so 100,000 resamples over 1,000 examples
    take a fraction of a second. Seeded, so the same inputs give the same interval.
    """
    if len(candidate) != len(champion) or not candidate:
        raise ValueError("both models need scores on the same, non-empty list of examples")
    if samples < 1:
        raise ValueError("samples must be at least 1")
    import numpy as np  # imported here so that importing the gate stays cheap

    differences = np.asarray(candidate, dtype=np.float64) - np.asarray(champion, dtype=np.float64)
    n = differences.size
    rng = np.random.default_rng(seed)
    means = np.empty(samples, dtype=np.float64)
    rows = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, samples, rows):
        count = min(rows, samples - start)
        picks = rng.integers(0, n, size=(count, n))
        means[start : start + count] = differences[picks].mean(axis=1)
    means.sort()
    low = float(means[int(0.025 * (samples - 1))])
    high = float(means[round(0.975 * (samples - 1))])
    return Interval(mean=float(differences.mean()), low=low, high=high, samples=samples)


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
