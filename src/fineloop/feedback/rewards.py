"""Reward policy: how each feedback event becomes a number in [-1, 1].

The policy is data stored with the project. The stored `reward` is the policy's value times
the difficulty factor; temporal decay is applied when the reward is *used* (statistics,
dataset building), relative to that moment, so old feedback fades without rewriting rows.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, model_validator

from fineloop.validation import INPUT


class RatingScale(BaseModel):
    model_config = INPUT

    min: float = Field(default=1.0, description="Lowest allowed rating.")
    max: float = Field(default=5.0, description="Highest allowed rating.")

    @model_validator(mode="after")
    def _ordered(self) -> RatingScale:
        if self.max <= self.min:
            raise ValueError("rating_scale.max must be greater than rating_scale.min")
        return self


class RewardPolicy(BaseModel):
    """Per-project reward settings; every field has a default documented in the README."""

    model_config = INPUT

    thumb_up: float = Field(default=1.0, ge=-1, le=1, description="Reward of a thumbs-up.")
    thumb_down: float = Field(default=-1.0, ge=-1, le=1, description="Reward of a thumbs-down.")
    correction: float = Field(
        default=-0.5,
        ge=-1,
        le=1,
        description="Reward of the corrected output (the model was wrong, but close enough "
        "to fix); the correction itself becomes a positive training example.",
    )
    selection_picked: float = Field(
        default=1.0, ge=-1, le=1, description="Reward when the user picked at least one item."
    )
    selection_none: float = Field(
        default=-1.0, ge=-1, le=1, description="Reward when the user rejected all shown items."
    )
    preference: float = Field(
        default=1.0, ge=-1, le=1, description="Reward (signal strength) of an A-over-B pair."
    )
    label: float = Field(
        default=1.0, ge=-1, le=1, description="Reward (signal strength) of a ground-truth label."
    )
    rating_scale: RatingScale = Field(
        default_factory=RatingScale,
        description="Declared scale; ratings map linearly onto [-1, 1].",
    )
    half_life_days: float | None = Field(
        default=90.0,
        gt=0,
        description="Age at which an event's reward counts half; null turns decay off.",
    )
    difficulty_weight: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="0 ignores difficulty; w scales easy events (difficulty 0) by 1-w and "
        "leaves hard ones (difficulty 1) whole.",
    )
    quality_threshold: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Events whose |effective reward| is below this are not used for training.",
    )


def kind_value(policy: RewardPolicy, kind: str, payload: dict[str, Any]) -> float:
    """The policy's reward for an event before difficulty and decay."""
    if kind == "thumb":
        return policy.thumb_up if payload["value"] == "up" else policy.thumb_down
    if kind == "rating":
        scale = policy.rating_scale
        position = (float(payload["value"]) - scale.min) / (scale.max - scale.min)
        return 2.0 * position - 1.0
    if kind == "selection":
        return policy.selection_picked if payload.get("selected") else policy.selection_none
    if kind == "correction":
        return policy.correction
    if kind == "preference":
        return policy.preference
    if kind == "label":
        return policy.label
    raise ValueError(f"unknown feedback kind {kind!r}")


def stored_reward(
    policy: RewardPolicy, kind: str, payload: dict[str, Any], difficulty: float | None
) -> float:
    """The reward kept in the store: the kind's value scaled by the difficulty factor."""
    value = kind_value(policy, kind, payload)
    if policy.difficulty_weight and difficulty is not None:
        value *= 1.0 - policy.difficulty_weight * (1.0 - difficulty)
    return max(-1.0, min(1.0, value))


def decay(policy: RewardPolicy, timestamp: datetime, now: datetime) -> float:
    if policy.half_life_days is None:
        return 1.0
    age_days = max(0.0, (now - timestamp).total_seconds() / 86_400.0)
    return math.pow(0.5, age_days / policy.half_life_days)


def effective_reward(
    policy: RewardPolicy, reward: float, timestamp: datetime, now: datetime
) -> float:
    """The reward as of `now`: the stored value with temporal decay applied."""
    return reward * decay(policy, timestamp, now)


def usable_for_training(policy: RewardPolicy, effective: float) -> bool:
    return abs(effective) >= policy.quality_threshold
