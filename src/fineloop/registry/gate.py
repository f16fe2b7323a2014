"""The promotion gate: a candidate replaces the champion only when it is surely better.

"Surely" means the lower end of a paired bootstrap 95% interval of the candidate's
improvement over the champion on the primary metric, over the same held-out examples,
lies above a margin. The improvement is candidate - champion when higher is better
(nDCG, accuracy) and champion - candidate when lower is better (loss, perplexity), so a
gate on a loss never promotes the worse model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    import numpy as np  # imported here so that importing the gate stays cheap

    _check_paired(len(candidate), len(champion), samples)
    differences = np.asarray(candidate, dtype=np.float64) - np.asarray(champion, dtype=np.float64)
    means = _resampled(differences.size, samples, seed, lambda picks: differences[picks].mean(1))
    return _interval(float(differences.mean()), means, samples)


def paired_ratio_bootstrap(
    candidate: Sequence[tuple[float, float]],
    champion: Sequence[tuple[float, float]],
    *,
    samples: int = 1000,
    seed: int = 13,
) -> Interval:
    """95% percentile interval of ratio(candidate) - ratio(champion), resampling examples,
    for a metric that is a ratio of sums over examples rather than a mean (micro F1 =
    Σ 2·tp / Σ (gold + predicted)): each example gives its (numerator, denominator), and
    every resample recomputes both ratios. A mean of per-example F1s would let a model that
    finds nothing win on a corpus of mostly empty texts; the ratio does not. A resample
    whose denominators sum to 0 scores 0."""
    import numpy as np

    _check_paired(len(candidate), len(champion), samples)
    ours = np.asarray(candidate, dtype=np.float64).reshape(-1, 2)
    theirs = np.asarray(champion, dtype=np.float64).reshape(-1, 2)

    def ratio(parts: Any, picks: Any) -> Any:
        top, bottom = parts[:, 0][picks].sum(1), parts[:, 1][picks].sum(1)
        return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)

    def difference(picks: Any) -> Any:
        return ratio(ours, picks) - ratio(theirs, picks)

    whole = difference(np.arange(len(ours))[None, :])[0]
    return _interval(float(whole), _resampled(len(ours), samples, seed, difference), samples)


def _check_paired(candidates: int, champions: int, samples: int) -> None:
    if candidates != champions or not candidates:
        raise ValueError("both models need scores on the same, non-empty list of examples")
    if samples < 1:
        raise ValueError("samples must be at least 1")


def _resampled(n: int, samples: int, seed: int, statistic: Callable[[Any], Any]) -> Any:
    """`statistic` of `samples` resamples of n examples (rows of indices), in blocks."""
    import numpy as np

    rng = np.random.default_rng(seed)
    values = np.empty(samples, dtype=np.float64)
    rows = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, samples, rows):
        count = min(rows, samples - start)
        values[start : start + count] = statistic(rng.integers(0, n, size=(count, n)))
    return values


def _interval(mean: float, values: Any, samples: int) -> Interval:
    values.sort()
    low = float(values[int(0.025 * (samples - 1))])
    high = float(values[round(0.975 * (samples - 1))])
    return Interval(mean=mean, low=low, high=high, samples=samples)


def improvement_interval(
    candidate: list[float],
    champion: list[float],
    *,
    higher_is_better: bool = True,
    samples: int = 1000,
    seed: int = 13,
    candidate_parts: Sequence[tuple[float, float]] = (),
    champion_parts: Sequence[tuple[float, float]] = (),
) -> Interval:
    """The paired bootstrap interval of how much better the candidate is, in the metric's
    own units, whichever way the metric points. With both models' ratio parts (see
    `paired_ratio_bootstrap`) the ratio itself is resampled, else the per-example mean."""
    if candidate_parts and len(candidate_parts) == len(champion_parts):
        parts = (candidate_parts, champion_parts)
        better_parts, worse_parts = parts if higher_is_better else parts[::-1]
        return paired_ratio_bootstrap(better_parts, worse_parts, samples=samples, seed=seed)
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
