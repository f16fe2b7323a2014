"""Per-variant online metrics, from the feedback on the interactions each variant served.

A variant's interactions are those recording its name in `variant`, made while the rollout
ran (started_at to ended_at). An interaction is *judged* once it has at least one feedback
event; only judged interactions enter the metrics, one sample each:

- reward: the mean stored reward of its feedback events (no time decay: both variants ran
  over the same period, and decay would only favour whichever got feedback last);
- accepted: with selection feedback, whether the item it showed at rank 1 is among the
  items the user picked (the "picked / shown at top 1" rate); without selection feedback
  (thumbs, ratings, ... of any task), whether its reward is above 0.

So acceptance_rate = accepted / judged, mean_reward = mean of the per-interaction rewards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from fineloop.rollouts import stats
from fineloop.rollouts.spec import RolloutPolicy, Variant
from fineloop.rollouts.store import policy_of, variants_of
from fineloop.store.interactions import shown_item_ids
from fineloop.store.schema import Feedback, Interaction, Rollout


@dataclass
class Samples:
    """What one variant collected: counts, and one sample per judged interaction."""

    variant: str
    interactions: int = 0
    feedback: int = 0
    rewards: list[float] = field(default_factory=list)
    accepted: int = 0

    @property
    def judged(self) -> int:
        return len(self.rewards)


@dataclass
class _Judged:
    output: Any
    rewards: list[float] = field(default_factory=list)
    picked: set[str] = field(default_factory=set)
    selections: int = 0

    def accepted(self) -> bool:
        if self.selections:
            shown = shown_item_ids(self.output) or []
            return bool(shown) and shown[0] in self.picked
        return sum(self.rewards) > 0


def collect(session: Session, rollout: Rollout) -> dict[str, Samples]:
    """Samples of every variant of the rollout (variants without traffic have zeros)."""
    names = [v.name for v in variants_of(rollout)]
    found = {name: Samples(name) for name in names}
    where = _window(rollout, names)
    counted = session.execute(
        select(Interaction.variant, func.count()).where(*where).group_by(Interaction.variant)
    )
    for name, count in counted:
        found[str(name)].interactions = int(count)
    rows = session.execute(
        select(
            Interaction.variant,
            Interaction.id,
            Interaction.output,
            Feedback.kind,
            Feedback.reward,
            Feedback.payload,
        )
        .join(
            Feedback,
            and_(
                Feedback.project_id == Interaction.project_id,
                Feedback.interaction_id == Interaction.id,
            ),
        )
        .where(*where)
    )
    judged: dict[tuple[str, str], _Judged] = {}
    for name, interaction_id, output, kind, reward, payload in rows:
        name = str(name)
        entry = judged.setdefault((name, interaction_id), _Judged(output))
        entry.rewards.append(float(reward))
        if kind == "selection":
            entry.selections += 1
            entry.picked.update(str(i) for i in (payload or {}).get("selected", []))
        found[name].feedback += 1
    for (name, _), entry in sorted(judged.items()):
        found[name].rewards.append(sum(entry.rewards) / len(entry.rewards))
        found[name].accepted += entry.accepted()
    return found


def _window(rollout: Rollout, names: list[str]) -> list[ColumnElement[bool]]:
    where = [
        Interaction.project_id == rollout.project_id,
        Interaction.created_at >= rollout.started_at,
        Interaction.variant.in_(names),
    ]
    if rollout.ended_at is not None:
        where.append(Interaction.created_at <= rollout.ended_at)
    return where


def variant_metrics(samples: Samples, policy: RolloutPolicy) -> dict[str, Any]:
    """One row of the public metrics; ci_low/ci_high bound the policy's metric."""
    n = samples.judged
    rate = samples.accepted / n if n else None
    mean = sum(samples.rewards) / n if n else None
    if policy.metric == "acceptance_rate":
        low, high = stats.wilson(samples.accepted, n, policy.alpha)
    else:
        low, high = stats.mean_interval(samples.rewards, policy.alpha)
    return {
        "variant": samples.variant,
        "interactions": samples.interactions,
        "feedback": samples.feedback,
        "judged": n,
        "accepted": samples.accepted,
        "mean_reward": mean,
        "acceptance_rate": rate,
        "metric": policy.metric,
        "ci_low": low,
        "ci_high": high,
    }


def compare(control: Samples, challenger: Samples, policy: RolloutPolicy) -> dict[str, Any]:
    """The challenger against the control on both metrics; the policy's metric decides
    `significant` (p < alpha with min_samples judged interactions on each side) and
    `better` (the variant ahead when significant, else None). With `policy.sequential`
    the deciding `p_value` is the always-valid one; `p_fixed` is the one-look p-value."""
    acceptance = stats.proportions(
        control.accepted, control.judged, challenger.accepted, challenger.judged, policy.alpha
    )
    reward = stats.means(control.rewards, challenger.rewards, policy.alpha)
    if policy.metric == "acceptance_rate":
        primary = acceptance
        variance = stats.proportions_variance(
            control.accepted, control.judged, challenger.accepted, challenger.judged
        )
    else:
        primary = reward
        variance = stats.means_variance(control.rewards, challenger.rewards)
    enough = min(control.judged, challenger.judged) >= policy.min_samples
    difference = primary.difference
    test, p_value = primary.test, primary.p_value
    if policy.sequential and primary.test != "none":
        test = f"sequential (mSPRT, effect size {policy.effect_size:g}) on {primary.test}"
        p_value = stats.always_valid(difference, variance, policy.effect_size)
    significant = enough and p_value is not None and p_value < policy.alpha
    better = None
    if significant and difference:
        better = challenger.variant if difference > 0 else control.variant
    return {
        "control": control.variant,
        "challenger": challenger.variant,
        "metric": policy.metric,
        "test": test,
        "difference": difference,
        "ci_low": primary.ci_low,
        "ci_high": primary.ci_high,
        "p_value": p_value,
        "p_fixed": primary.p_value,
        "sequential": policy.sequential,
        "alpha": policy.alpha,
        "significant": significant,
        "better": better,
        "samples": {control.variant: control.judged, challenger.variant: challenger.judged},
        "min_samples": policy.min_samples,
        "enough_samples": enough,
        "tests": {"acceptance_rate": acceptance.as_dict(), "mean_reward": reward.as_dict()},
    }


def evaluation(
    session: Session, rollout: Rollout
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(metrics of every variant, comparisons of each challenger with the control)."""
    policy, variants = policy_of(rollout), variants_of(rollout)
    samples = collect(session, rollout)
    rows = [variant_metrics(samples[v.name], policy) for v in variants]
    control: Variant = variants[0]
    comparisons = [compare(samples[control.name], samples[v.name], policy) for v in variants[1:]]
    return rows, comparisons
