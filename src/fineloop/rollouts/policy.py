"""The rollout policy: act on a significant difference between a challenger and the control.

- significantly worse, with auto_rollback: the challenger's traffic goes to the control;
  once no challenger has traffic left the rollout ends (every request to the champion).
- significantly better, with auto_promote: if the challenger's version passed the offline
  promotion gate it becomes the champion (the registry's atomic promote, actor "policy")
  and the rollout ends; if it did not, nothing moves and the history says so, once.

Each evaluation runs in one write transaction holding the rollout row, so two processes
evaluating at once act once. Every action is a history row with its reason and the test
that justified it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fineloop.errors import NotFound
from fineloop.registry import manage
from fineloop.registry.versions import resolve
from fineloop.rollouts.metrics import evaluation
from fineloop.rollouts.store import (
    ACTIVE,
    active_rollout,
    end_rollout,
    history_of,
    policy_of,
    record,
    set_weights,
    variants_of,
)
from fineloop.store import Store
from fineloop.store.projects import get_project
from fineloop.store.schema import Project, Rollout

ACTOR = "policy"


def evaluate(store: Store, project_name: str) -> list[dict[str, Any]]:
    """Evaluate the project's active rollout now; the actions taken (empty: none)."""
    with store.write() as session:
        project = get_project(session, project_name)
        rollout = active_rollout(session, project.id, lock=True)
        if rollout is None:
            return []
        return decide(session, project, rollout)


def evaluate_all(store: Store) -> dict[str, list[dict[str, Any]]]:
    """Evaluate every active rollout (for a periodic loop); project -> actions taken."""
    with store.read() as session:
        names = list(
            session.scalars(
                select(Project.name)
                .join(Rollout, Rollout.project_id == Project.id)
                .where(Rollout.state == ACTIVE)
            )
        )
    return {name: evaluate(store, name) for name in names}


def decide(session: Session, project: Project, rollout: Rollout) -> list[dict[str, Any]]:
    policy = policy_of(rollout)
    _, comparisons = evaluation(session, rollout)
    weights = {v.name: v.weight for v in variants_of(rollout)}
    live = [c for c in comparisons if c["significant"] and weights[c["challenger"]] > 0]
    better = sorted(
        (c for c in live if c["better"] == c["challenger"]), key=lambda c: -c["difference"]
    )
    if policy.auto_promote:
        for comparison in better:
            taken = _promote_or_hold(session, project, rollout, comparison)
            if taken is not None:
                return [taken]
    worse = [c for c in live if c["better"] == c["control"]]
    if not policy.auto_rollback or not worse:
        return []
    control = comparisons[0]["control"]
    for comparison in worse:
        weights[control] += weights[comparison["challenger"]]
        weights[comparison["challenger"]] = 0.0
    set_weights(rollout, weights)
    losers = ", ".join(c["challenger"] for c in worse)
    reason = "; ".join(_finding(c, "worse") for c in worse) + f"; traffic of {losers} to {control}"
    details = {"comparisons": worse}
    if all(w == 0 for name, w in weights.items() if name != control):
        end_rollout(
            session,
            rollout,
            action="rollback",
            reason=reason + "; rollout ended",
            actor=ACTOR,
            details=details,
        )
    else:
        record(session, rollout, "rollback", reason, actor=ACTOR, details=details)
    return [{"action": "rollback", "variants": [c["challenger"] for c in worse], "reason": reason}]


def _promote_or_hold(
    session: Session, project: Project, rollout: Rollout, comparison: dict[str, Any]
) -> dict[str, Any] | None:
    """Promote a better challenger that passed the gate; else note (once) why not."""
    name = comparison["challenger"]
    target = next(v.target for v in variants_of(rollout) if v.name == name)
    try:
        version = resolve(session, project, target)
    except NotFound:  # its alias was removed under the rollout: nothing to promote
        return None
    label = f"v{version.number}"
    finding = _finding(comparison, "better")
    if version.gate.get("passed") is True:
        reason = f"{finding}; {label} passed the offline gate"
        moved = manage.promote(
            session, project, label, reason=f"rollout {rollout.id}: {reason}", actor=ACTOR
        )
        reason = f"{reason}: promoted to champion; rollout ended"
        end_rollout(
            session,
            rollout,
            action="promote",
            reason=reason,
            actor=ACTOR,
            details={"comparison": comparison, "promotion": moved},
        )
        return {"action": "promote", "variant": name, "version": label, "reason": reason}
    held = any(
        c.action == "hold" and c.details.get("variant") == name
        for c in history_of(session, rollout.id)
    )
    if not held:
        gate = version.gate.get("reason") or "it has no gate result"
        reason = (
            f"{finding}; not promoted: {label} did not pass the offline gate ({gate}). "
            f"Promote it by hand (force) if the online result is enough"
        )
        details = {"variant": name, "comparison": comparison}
        record(session, rollout, "hold", reason, actor=ACTOR, details=details)
    return None


def _finding(comparison: dict[str, Any], verdict: str) -> str:
    c = comparison
    tested = c["tests"][c["metric"]]
    level = round(100 * (1 - c["alpha"]))
    return (
        f"{c['challenger']} is significantly {verdict} than {c['control']} on {c['metric']}: "
        f"{tested['b']:.4f} vs {tested['a']:.4f}, difference {c['difference']:+.4f} "
        f"({level}% CI [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]), {c['test']} test "
        f"p = {c['p_value']:.3g} < alpha {c['alpha']}, judged "
        f"{c['samples'][c['challenger']]} vs {c['samples'][c['control']]}"
    )
