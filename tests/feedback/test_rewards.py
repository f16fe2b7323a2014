"""The reward policy: how each event becomes a number in [-1, 1], and how it fades."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from fineloop.feedback.events import SelectionEvent
from fineloop.feedback.ingest import selection_difficulty
from fineloop.feedback.rewards import (
    RewardPolicy,
    decay,
    effective_reward,
    kind_value,
    stored_reward,
    usable_for_training,
)

DEFAULT = RewardPolicy()
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kind", "payload", "reward"),
    [
        ("thumb", {"value": "up"}, 1.0),
        ("thumb", {"value": "down"}, -1.0),
        ("rating", {"value": 1}, -1.0),
        ("rating", {"value": 2}, -0.5),
        ("rating", {"value": 3}, 0.0),
        ("rating", {"value": 4.5}, 0.75),
        ("rating", {"value": 5}, 1.0),
        ("correction", {"output": "fixed"}, -0.5),
        ("selection", {"selected": ["a"], "rejected": ["b"]}, 1.0),
        ("selection", {"selected": [], "rejected": ["a", "b"]}, -1.0),
        ("selection", {"rejected": ["a"]}, -1.0),
        ("preference", {"chosen": "a", "rejected": "b"}, 1.0),
        ("label", {"label": "billing"}, 1.0),
    ],
)
def test_default_policy_rewards(kind: str, payload: dict[str, Any], reward: float) -> None:
    assert kind_value(DEFAULT, kind, payload) == pytest.approx(reward)


def test_a_policy_sets_each_kinds_reward() -> None:
    policy = RewardPolicy(
        thumb_up=0.5,
        thumb_down=-0.25,
        correction=-0.1,
        selection_picked=0.8,
        selection_none=-0.2,
        preference=0.6,
        label=0.9,
    )

    values = [
        kind_value(policy, "thumb", {"value": "up"}),
        kind_value(policy, "thumb", {"value": "down"}),
        kind_value(policy, "correction", {"output": "x"}),
        kind_value(policy, "selection", {"selected": ["a"]}),
        kind_value(policy, "selection", {"rejected": ["a"]}),
        kind_value(policy, "preference", {}),
        kind_value(policy, "label", {"items": ["a"]}),
    ]

    assert values == [0.5, -0.25, -0.1, 0.8, -0.2, 0.6, 0.9]


@pytest.mark.parametrize(("rating", "reward"), [(0, -1.0), (2.5, -0.5), (5, 0.0), (10, 1.0)])
def test_ratings_map_linearly_from_the_declared_scale(rating: float, reward: float) -> None:
    policy = RewardPolicy.model_validate({"rating_scale": {"min": 0, "max": 10}})

    assert kind_value(policy, "rating", {"value": rating}) == pytest.approx(reward)


def test_an_unknown_kind_has_no_reward() -> None:
    with pytest.raises(ValueError, match="smile"):
        kind_value(DEFAULT, "smile", {})


@pytest.mark.parametrize(
    ("weight", "difficulty", "reward"),
    [
        (0.0, 0.0, 1.0),  # weight 0 ignores difficulty
        (0.5, 1.0, 1.0),  # hard cases keep their whole reward
        (0.5, 0.0, 0.5),  # easy ones are scaled by 1 - w
        (0.5, 0.5, 0.75),
        (1.0, 0.0, 0.0),
        (0.5, None, 1.0),  # unknown difficulty: whole
    ],
)
def test_difficulty_scales_the_stored_reward(
    weight: float, difficulty: float | None, reward: float
) -> None:
    policy = RewardPolicy(difficulty_weight=weight)

    assert stored_reward(policy, "thumb", {"value": "up"}, difficulty) == pytest.approx(reward)
    assert stored_reward(policy, "thumb", {"value": "down"}, difficulty) == pytest.approx(-reward)


def test_the_stored_reward_never_leaves_minus_one_to_one() -> None:
    assert stored_reward(DEFAULT, "rating", {"value": 9}, None) == 1.0
    assert stored_reward(DEFAULT, "rating", {"value": -3}, None) == -1.0


@pytest.mark.parametrize(
    ("age_days", "factor"),
    [(0, 1.0), (90, 0.5), (180, 0.25), (45, 2**-0.5), (-10, 1.0)],  # the future counts whole
)
def test_rewards_halve_every_half_life(age_days: float, factor: float) -> None:
    moment = NOW - timedelta(days=age_days)

    assert decay(DEFAULT, moment, NOW) == pytest.approx(factor)
    assert effective_reward(DEFAULT, -0.8, moment, NOW) == pytest.approx(-0.8 * factor)


def test_no_half_life_means_no_decay() -> None:
    policy = RewardPolicy(half_life_days=None)

    assert effective_reward(policy, 0.7, NOW - timedelta(days=10_000), NOW) == 0.7


@pytest.mark.parametrize(
    ("effective", "usable"), [(0.1, True), (-0.1, True), (0.0999, False), (0.0, False), (-1, True)]
)
def test_quality_threshold_on_the_size_of_the_effective_reward(
    effective: float, usable: bool
) -> None:
    assert usable_for_training(DEFAULT, effective) is usable


@pytest.mark.parametrize(
    "spec",
    [
        {"thumb_up": 1.5},
        {"correction": -2},
        {"rating_scale": {"min": 5, "max": 1}},
        {"rating_scale": {"min": 3, "max": 3}},
        {"half_life_days": 0},
        {"difficulty_weight": 1.5},
        {"quality_threshold": -0.1},
        {"thumbs_up": 1},
    ],
)
def test_impossible_policies_are_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RewardPolicy.model_validate(spec)


def test_a_policy_survives_being_stored_as_json() -> None:
    policy = RewardPolicy.model_validate(
        {"thumb_up": 0.5, "rating_scale": {"min": 0, "max": 10}, "half_life_days": None}
    )

    assert RewardPolicy.model_validate(policy.model_dump(mode="json")) == policy


SHOWN = {"items": [{"id": "a"}, {"id": "b"}, "c", {"item_id": "d"}, {"id": "e"}]}


@pytest.mark.parametrize(
    ("selected", "output", "difficulty"),
    [
        (["a"], SHOWN, 0.0),  # the top result was right: an easy case
        (["e"], SHOWN, 1.0),  # the user went to the bottom: a hard one
        (["c"], SHOWN, 0.5),
        (["a", "e"], SHOWN, 0.5),  # the mean position of the picks
        (["d", "zz"], SHOWN, 0.75),  # ids not shown are left out
        (["a"], {"items": [{"id": "a"}]}, 0.0),
        (["a"], "plain text output", None),  # no ranking, no difficulty
    ],
)
def test_selection_difficulty_is_how_far_down_the_ranking_the_picks_were(
    selected: list[str], output: Any, difficulty: float | None
) -> None:
    event = SelectionEvent(kind="selection", interaction_id="i", selected=selected)

    assert selection_difficulty(event, output) == difficulty


def test_a_selection_of_rejections_only_has_no_difficulty() -> None:
    event = SelectionEvent(kind="selection", interaction_id="i", rejected=["a"])

    assert selection_difficulty(event, SHOWN) is None
