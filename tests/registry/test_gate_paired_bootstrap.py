"""The gate's paired bootstrap: vectorised, seeded, and the same interval as the plain loop."""

from __future__ import annotations

import random

import pytest

from fineloop.registry.gate import Interval, paired_bootstrap


def slow_reference(
    candidate: list[float], champion: list[float], samples: int, seed: int
) -> tuple[float, float, float]:
    """The definition, written as a loop: percentiles 2.5/97.5 of resampled mean differences."""
    differences = [c - b for c, b in zip(candidate, champion, strict=True)]
    n = len(differences)
    rng = random.Random(seed)
    means = sorted(sum(differences[rng.randrange(n)] for _ in range(n)) / n for _ in range(samples))
    return (
        sum(differences) / n,
        means[int(0.025 * (samples - 1))],
        means[round(0.975 * (samples - 1))],
    )


def scores(n: int, seed: int, shift: float) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    champion = [rng.random() for _ in range(n)]
    candidate = [min(1.0, max(0.0, s + shift + rng.gauss(0, 0.2))) for s in champion]
    return candidate, champion


def test_the_interval_has_the_same_shape_contains_the_mean_and_repeats_per_seed() -> None:
    candidate, champion = scores(200, 1, 0.05)
    interval = paired_bootstrap(candidate, champion, samples=2000, seed=7)
    assert isinstance(interval, Interval) and interval.samples == 2000
    assert all(isinstance(v, float) for v in (interval.mean, interval.low, interval.high))
    assert interval.low < interval.mean < interval.high
    assert paired_bootstrap(candidate, champion, samples=2000, seed=7) == interval
    assert paired_bootstrap(candidate, champion, samples=2000, seed=8) != interval


def test_it_agrees_with_the_slow_loop_within_resampling_noise() -> None:
    candidate, champion = scores(60, 2, 0.03)
    interval = paired_bootstrap(candidate, champion, samples=20_000, seed=3)
    mean, low, high = slow_reference(candidate, champion, samples=20_000, seed=3)
    assert interval.mean == pytest.approx(mean, abs=1e-12)
    # Different random streams, same distribution: the percentiles agree to within 5% of
    # the interval's width.
    width = high - low
    assert interval.low == pytest.approx(low, abs=0.05 * width)
    assert interval.high == pytest.approx(high, abs=0.05 * width)


def test_a_constant_difference_gives_a_zero_width_interval() -> None:
    champion = [0.1, 0.4, 0.3]
    interval = paired_bootstrap([s + 0.25 for s in champion], champion, samples=100, seed=0)
    assert interval.low == pytest.approx(0.25) and interval.high == pytest.approx(0.25)


def test_bad_input_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="same, non-empty list"):
        paired_bootstrap([0.1], [0.1, 0.2])
    with pytest.raises(ValueError, match="samples must be at least 1"):
        paired_bootstrap([0.1], [0.2], samples=0)


def test_100k_resamples_over_1000_examples_in_blocks() -> None:
    """Blocks of resamples (not one 10^8-index matrix); how fast is for bench/, not here."""
    candidate, champion = scores(1000, 4, 0.01)
    interval = paired_bootstrap(candidate, champion, samples=100_000, seed=0)
    assert interval.samples == 100_000 and interval.low < interval.mean < interval.high


def test_a_ratio_metric_is_resampled_as_a_ratio_not_a_mean_of_examples() -> None:
    """Micro F1 on a corpus of mostly empty texts: the model that finds nothing scores 1.0
    on every empty text by a per-text mean, yet its F1 is 0; the ratio bootstrap says so."""
    from fineloop.registry.gate import improvement_interval, paired_ratio_bootstrap

    empty, with_entity = 90, 10
    finds_some = [(0.0, 1.0)] * 20 + [(0.0, 0.0)] * (empty - 20) + [(2.0, 2.0)] * with_entity
    finds_none = [(0.0, 0.0)] * empty + [(0.0, 1.0)] * with_entity
    per_text = [0.0 if d and not n else (n / d if d else 1.0) for n, d in finds_some]
    nothing = [1.0] * empty + [0.0] * with_entity
    assert improvement_interval(per_text, nothing).mean < 0  # the trap a mean falls into
    interval = paired_ratio_bootstrap(finds_some, finds_none, samples=500)
    assert interval.mean == pytest.approx(20 / 40)  # F1 20/(20+20) against 0
    assert interval.low > 0.2
    by_parts = improvement_interval(
        per_text, nothing, candidate_parts=finds_some, champion_parts=finds_none, samples=500
    )
    assert by_parts == interval
    worse = improvement_interval(
        per_text,
        nothing,
        higher_is_better=False,
        candidate_parts=finds_some,
        champion_parts=finds_none,
        samples=500,
    )
    assert worse.mean == pytest.approx(-interval.mean)
    assert paired_ratio_bootstrap([(0.0, 0.0)], [(0.0, 0.0)], samples=10).mean == 0.0
