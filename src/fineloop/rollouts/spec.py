"""What a rollout is made of: variants (a name, a target version or alias, a weight) and the
policy that watches it. Input is validated here; weights are relative and stored normalised
to sum 1, so 9 and 1 mean the same as 0.9 and 0.1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from fineloop.schemas import Strict

MAX_VARIANTS = 4
Metric = Literal["acceptance_rate", "mean_reward"]


class RolloutPolicy(Strict):
    """When the policy may act on a rollout, and what it may do."""

    metric: Metric = Field(
        default="acceptance_rate",
        description="What decides: acceptance_rate (two-proportion z-test, Fisher's exact "
        "test for small counts) or mean_reward (Welch's t-test).",
    )
    min_samples: int = Field(
        default=100,
        ge=1,
        le=10_000_000,
        description="Judged interactions (with feedback) each of the two variants needs "
        "before a difference may count as significant.",
    )
    alpha: float = Field(
        default=0.05, gt=0, le=0.5, description="Significance level of the two-sided test."
    )
    sequential: bool = Field(
        default=True,
        description="Decide on an always-valid p-value (mixture SPRT), which stays valid "
        "however often the policy re-tests as feedback arrives. Off: the fixed-sample "
        "p-value, valid only for one look at a sample size chosen in advance (min_samples).",
    )
    effect_size: float = Field(
        default=0.1,
        gt=0,
        le=10,
        description="Sequential test only: the difference on the metric (e.g. 0.1 = ten "
        "points of acceptance rate) it detects fastest; others are detected too, later.",
    )
    auto_rollback: bool = Field(
        default=True,
        description="A challenger significantly worse than the control loses its traffic; "
        "when no challenger is left the rollout ends and all traffic goes to the champion.",
    )
    auto_promote: bool = Field(
        default=True,
        description="A challenger significantly better than the control, whose version also "
        "passed the offline promotion gate, becomes the champion and the rollout ends.",
    )
    debounce_seconds: float = Field(
        default=30.0,
        ge=0,
        le=86_400,
        description="Feedback triggers an evaluation of the policy at most this often.",
    )


VariantName = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Recorded on each interaction it serves: letters, digits, _ . - "
        "(at most 64), e.g. champion, challenger.",
    ),
]


class VariantSpec(Strict):
    name: VariantName
    target: str = Field(
        min_length=1,
        max_length=64,
        description="An alias (champion, challenger, ...) or a version (v3, 3). An alias is "
        "followed when it moves.",
    )
    weight: float = Field(
        ge=0,
        le=1_000_000,
        allow_inf_nan=False,
        description="Relative share of traffic; 0 pauses the variant.",
    )


class RolloutSpec(Strict):
    """PUT body: the variants (the first is the control and must serve the champion)."""

    variants: list[VariantSpec] = Field(
        min_length=2,
        max_length=MAX_VARIANTS,
        description=f"2 to {MAX_VARIANTS} variants; the first is the control (the champion).",
    )
    policy: RolloutPolicy | None = Field(
        default=None,
        description="Omitted: the running rollout's policy, or the defaults for a new one.",
    )
    reason: str | None = Field(
        default=None, max_length=2000, description="Why; kept in the rollout history."
    )

    @model_validator(mode="after")
    def _consistent(self) -> RolloutSpec:
        names = [v.name for v in self.variants]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"variant names must be distinct; repeated: {repeated}")
        if sum(v.weight for v in self.variants) <= 0:
            raise ValueError("at least one variant needs a weight above 0")
        return self

    def normalised(self) -> list[Variant]:
        total = sum(v.weight for v in self.variants)
        return [Variant(v.name, v.target, round(v.weight / total, 9)) for v in self.variants]


@dataclass(frozen=True)
class Variant:
    name: str
    target: str
    weight: float

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "weight": self.weight}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Variant:
        return cls(str(row["name"]), str(row["target"]), float(row["weight"]))


def weights_of(variants: list[Variant]) -> dict[str, float]:
    return {v.name: v.weight for v in variants}
