"""Per-variant metrics from the feedback on each variant's interactions, and the tests
between them, checked against counts and statistics computed here from what was sent."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import pytest
from fastapi.testclient import TestClient
from scipy import stats as scipy_stats

from fineloop.rollouts import stats
from rollouts.conftest import StartRollout, pick, rollout, thumb, traffic


def test_metrics_match_an_independent_count(
    client: TestClient, start_rollout: StartRollout
) -> None:
    start_rollout((0.5, 0.5), min_samples=5, auto_rollback=False, auto_promote=False)
    answers = traffic(client, 70)
    seen: dict[str, int] = defaultdict(int)
    sent: dict[str, list[dict[str, Any]]] = defaultdict(list)  # variant -> judged records
    for answer in answers:
        variant = answer["variant"]
        order = seen[variant]
        seen[variant] += 1
        plan = (order + (0 if variant == "champion" else 2)) % 5
        record: dict[str, Any] = {"rewards": [], "top_picked": None}
        if plan == 0:
            record["rewards"].append(pick(client, answer, top=True))
            record["top_picked"] = True
            if order % 2 == 0:  # a second event on the same interaction
                record["rewards"].append(thumb(client, answer, up=False))
        elif plan == 1:
            record["rewards"].append(pick(client, answer, top=False))
            record["top_picked"] = False
        elif plan in (2, 3):
            record["rewards"].append(thumb(client, answer, up=plan == 2))
        else:
            continue  # shown, never judged
        sent[variant].append(record)

    found = rollout(client)
    metrics = {m["variant"]: m for m in found["metrics"]}
    expected: dict[str, dict[str, Any]] = {}
    for variant in ("champion", "challenger"):
        records = sent[variant]
        means = [sum(r["rewards"]) / len(r["rewards"]) for r in records]
        accepted = sum(
            r["top_picked"] if r["top_picked"] is not None else sum(r["rewards"]) > 0
            for r in records
        )
        expected[variant] = {"means": means, "accepted": accepted, "judged": len(records)}
        row = metrics[variant]
        assert row["interactions"] == seen[variant]
        assert row["feedback"] == sum(len(r["rewards"]) for r in records)
        assert row["judged"] == len(records)
        assert row["accepted"] == accepted
        assert row["acceptance_rate"] == pytest.approx(accepted / len(records))
        assert row["mean_reward"] == pytest.approx(sum(means) / len(means))
        assert row["ci_low"] <= row["acceptance_rate"] <= row["ci_high"]

    a, b = expected["champion"], expected["challenger"]
    comparison = found["comparison"]
    assert (comparison["control"], comparison["challenger"]) == ("champion", "challenger")
    pa, pb = a["accepted"] / a["judged"], b["accepted"] / b["judged"]
    pooled = (a["accepted"] + b["accepted"]) / (a["judged"] + b["judged"])
    z = (pb - pa) / math.sqrt(pooled * (1 - pooled) * (1 / a["judged"] + 1 / b["judged"]))
    assert comparison["test"] == "sequential (mSPRT, effect size 0.1) on z"
    assert comparison["difference"] == pytest.approx(pb - pa)
    assert comparison["p_fixed"] == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))
    variance = pooled * (1 - pooled) * (1 / a["judged"] + 1 / b["judged"])
    tau2 = 0.1**2
    ratio = math.sqrt(variance / (variance + tau2)) * math.exp(
        tau2 * (pb - pa) ** 2 / (2 * variance * (variance + tau2))
    )
    assert comparison["p_value"] == pytest.approx(min(1.0, 1 / ratio))
    assert comparison["p_value"] >= comparison["p_fixed"]  # the price of looking often
    assert comparison["ci_low"] < pb - pa < comparison["ci_high"]
    welch = scipy_stats.ttest_ind(b["means"], a["means"], equal_var=False)
    reward = comparison["tests"]["mean_reward"]
    assert reward["p_value"] == pytest.approx(welch.pvalue)
    assert reward["difference"] == pytest.approx(
        sum(b["means"]) / len(b["means"]) - sum(a["means"]) / len(a["means"])
    )


def test_small_counts_use_fishers_exact_test() -> None:
    result = stats.proportions(9, 10, 2, 10, 0.05)
    assert result.test == "fisher"
    assert result.p_value == pytest.approx(scipy_stats.fisher_exact([[2, 8], [9, 1]]).pvalue)
    assert result.p_value < 0.01
    assert result.ci_low is not None and result.ci_high is not None
    assert -1 <= result.ci_low < -0.7 < result.ci_high < 0


def test_no_data_and_no_spread_give_no_false_numbers() -> None:
    empty = stats.proportions(0, 0, 3, 5, 0.05)
    assert (empty.p_value, empty.difference, empty.b) == (None, None, 0.6)
    same = stats.proportions(10, 10, 20, 20, 0.05)
    assert same.p_value == 1.0 and same.difference == 0
    exact = stats.means([1.0, 1.0, 1.0], [-1.0, -1.0], 0.05)
    assert (exact.p_value, exact.difference, exact.ci_low) == (0.0, -2.0, -2.0)
    assert stats.means([1.0], [0.0, 1.0], 0.05).p_value is None


def test_a_rollout_without_feedback_reports_zeros_and_no_verdict(
    client: TestClient, start_rollout: StartRollout
) -> None:
    start_rollout((0.5, 0.5))
    traffic(client, 6)
    found = rollout(client)
    assert sum(m["interactions"] for m in found["metrics"]) == 6
    assert all(m["judged"] == 0 and m["acceptance_rate"] is None for m in found["metrics"])
    assert found["comparison"]["p_value"] is None
    assert found["comparison"]["significant"] is False


def peeking_false_positives(sequential: bool, runs: int = 300) -> float:
    """A/A tests (both arms accept 30%) looked at every 20 judged interactions per arm up
    to 1,000: the share of runs that ever call the difference significant at 0.05."""
    import numpy as np

    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(runs):
        a = np.cumsum(rng.random(1000) < 0.3)
        b = np.cumsum(rng.random(1000) < 0.3)
        for n in range(20, 1001, 20):
            ha, hb = int(a[n - 1]), int(b[n - 1])
            if sequential:
                variance = stats.proportions_variance(ha, n, hb, n)
                p = stats.always_valid(hb / n - ha / n, variance, 0.1)
            else:
                p = stats.proportions(ha, n, hb, n, 0.05).p_value
            if p is not None and p < 0.05:
                hits += 1
                break
    return hits / runs


def test_looking_after_every_batch_breaks_the_fixed_test_but_not_the_sequential_one() -> None:
    assert peeking_false_positives(sequential=False) > 0.15  # ~4x the promised 5%
    assert peeking_false_positives(sequential=True) <= 0.05


def test_the_sequential_test_still_finds_a_real_difference() -> None:
    variance = stats.proportions_variance(186, 300, 222, 300)  # 62% vs 74%
    assert stats.proportions(186, 300, 222, 300, 0.05).p_value < 0.01
    p = stats.always_valid(222 / 300 - 186 / 300, variance, 0.1)
    assert p is not None and p < 0.05
    assert stats.always_valid(0.0, variance, 0.1) == 1.0
    assert stats.always_valid(0.1, 0.0, 0.1) == 0.0  # no spread: the difference is exact
