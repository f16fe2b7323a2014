"""Significance tests between the control (a) and a challenger (b), two-sided at `alpha`.

Acceptance rates: the two-proportion z-test with a pooled variance, or Fisher's exact test
when an expected cell count is below 5; the interval of b - a is Newcombe's (from Wilson
intervals), which stays sensible at 0% and 100%. Mean rewards: Welch's t-test and its
interval. Every number is a plain float, or None when there is too little data to compute
it. scipy is imported on first use, so importing this module stays cheap.

Those p-values hold for one look at a sample size fixed in advance. A rollout policy looks
again every time feedback arrives, and checking a fixed-sample test that often finds a
"significant" difference between two identical variants far more often than alpha. So the
policy decides on an *always-valid* p-value instead: the mixture sequential probability
ratio test (mSPRT; Johari, Pekelis and Walsh, "Always valid inference", 2017) for a
difference of means with a normal approximation and a N(0, tau^2) mixing distribution:

    Lambda_n = sqrt(V / (V + tau^2)) * exp(tau^2 * d^2 / (2 V (V + tau^2)))

where d is the observed difference and V its variance (pooled under the null for
proportions). Rejecting when 1 / Lambda_n < alpha at any look keeps the false positive rate
at most alpha however often one looks. `tau` is the size of difference the test finds
fastest; smaller and larger true differences are found too, only later.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Result:
    metric: str
    test: str
    a: float | None
    b: float | None
    difference: float | None  # b - a
    p_value: float | None
    ci_low: float | None
    ci_high: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _scipy() -> Any:
    import scipy.stats  # type: ignore[import-untyped]

    return scipy.stats


def _z(alpha: float) -> float:
    return float(_scipy().norm.ppf(1 - alpha / 2))


def wilson(accepted: int, n: int, alpha: float) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion."""
    if n == 0:
        return None, None
    z, p = _z(alpha), accepted / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: list[float], alpha: float) -> tuple[float | None, float | None]:
    """Student t interval of a mean (None below two values)."""
    n = len(values)
    if n < 2:
        return None, None
    mean = sum(values) / n
    sd = math.sqrt(_sample_variance(values))
    half = float(_scipy().t.ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def proportions(a_hits: int, a_n: int, b_hits: int, b_n: int, alpha: float) -> Result:
    if a_n == 0 or b_n == 0:
        pa = a_hits / a_n if a_n else None
        pb = b_hits / b_n if b_n else None
        return Result("acceptance_rate", "none", pa, pb, None, None, None, None)
    pa, pb = a_hits / a_n, b_hits / b_n
    pooled = (a_hits + b_hits) / (a_n + b_n)
    expected = min(n * q for n in (a_n, b_n) for q in (pooled, 1 - pooled))
    if expected < 5:
        test = "fisher"
        table = [[b_hits, b_n - b_hits], [a_hits, a_n - a_hits]]
        p_value = float(_scipy().fisher_exact(table, alternative="two-sided").pvalue)
    else:
        test = "z"
        se = math.sqrt(pooled * (1 - pooled) * (1 / a_n + 1 / b_n))
        p_value = 1.0 if se == 0 else float(2 * _scipy().norm.sf(abs(pb - pa) / se))
    la, ua = wilson(a_hits, a_n, alpha)
    lb, ub = wilson(b_hits, b_n, alpha)
    assert la is not None and ua is not None and lb is not None and ub is not None
    d = pb - pa
    low = d - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)
    high = d + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)
    return Result("acceptance_rate", test, pa, pb, d, min(1.0, p_value), low, high)


def means(a: list[float], b: list[float], alpha: float) -> Result:
    ma = sum(a) / len(a) if a else None
    mb = sum(b) / len(b) if b else None
    if len(a) < 2 or len(b) < 2 or ma is None or mb is None:
        return Result("mean_reward", "none", ma, mb, None, None, None, None)
    d = mb - ma
    va, vb = _sample_variance(a), _sample_variance(b)
    if va == 0 and vb == 0:  # no spread at all: the difference is exact
        return Result("mean_reward", "welch", ma, mb, d, 1.0 if d == 0 else 0.0, d, d)
    with warnings.catch_warnings():  # one constant side is fine; scipy warns about it
        warnings.simplefilter("ignore", RuntimeWarning)
        result = _scipy().ttest_ind(b, a, equal_var=False)
        interval = result.confidence_interval(confidence_level=1 - alpha)
    return Result(
        "mean_reward",
        "welch",
        ma,
        mb,
        d,
        float(result.pvalue),
        float(interval.low),
        float(interval.high),
    )


def always_valid(difference: float | None, variance: float | None, tau: float) -> float | None:
    """mSPRT p-value min(1, 1 / Lambda) of an observed difference with this variance."""
    if difference is None or variance is None:
        return None
    if variance <= 0:  # no spread at all: the difference is exact
        return 1.0 if difference == 0 else 0.0
    spread = variance + tau * tau
    log_ratio = 0.5 * math.log(variance / spread) + (tau * tau * difference * difference) / (
        2 * variance * spread
    )
    return float(min(1.0, math.exp(-log_ratio)))


def proportions_variance(a_hits: int, a_n: int, b_hits: int, b_n: int) -> float | None:
    """Variance of b - a under the null (pooled), for the sequential test."""
    if a_n == 0 or b_n == 0:
        return None
    pooled = (a_hits + b_hits) / (a_n + b_n)
    return pooled * (1 - pooled) * (1 / a_n + 1 / b_n)


def means_variance(a: list[float], b: list[float]) -> float | None:
    """Variance of mean(b) - mean(a) (Welch), for the sequential test."""
    if len(a) < 2 or len(b) < 2:
        return None
    return _sample_variance(a) / len(a) + _sample_variance(b) / len(b)


def _sample_variance(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)
