"""Rollout rows and their history: start, change weights or policy, end.

At most one rollout of a project is active. Starting one locks the project row, so two
concurrent PUTs serialise (SQLite's single writer does the same). Every change writes a
history row with its action, reason, actor and the weights in force after it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fineloop.errors import Invalid, NotFound
from fineloop.registry.versions import CHAMPION, resolve
from fineloop.rollouts.spec import RolloutPolicy, RolloutSpec, Variant, weights_of
from fineloop.store.schema import Alias, ModelVersion, Project, Rollout, RolloutChange
from fineloop.validation import read_stored

ACTIVE, ENDED = "active", "ended"


def active_rollout(session: Session, project_id: int, *, lock: bool = False) -> Rollout | None:
    query = select(Rollout).where(Rollout.project_id == project_id, Rollout.state == ACTIVE)
    if lock:
        query = query.with_for_update()
    return session.scalar(query.order_by(Rollout.id.desc()).limit(1))


def latest_rollout(session: Session, project_id: int) -> Rollout | None:
    """The active rollout, else the one that ended last (what a dashboard shows)."""
    found = active_rollout(session, project_id)
    if found is not None:
        return found
    query = select(Rollout).where(Rollout.project_id == project_id)
    return session.scalar(query.order_by(Rollout.id.desc()).limit(1))


def variants_of(rollout: Rollout) -> list[Variant]:
    return [Variant.from_dict(row) for row in rollout.variants]


def policy_of(rollout: Rollout) -> RolloutPolicy:
    return read_stored(RolloutPolicy, rollout.policy, "rollout policy")


def history_of(session: Session, rollout_id: int) -> list[RolloutChange]:
    query = select(RolloutChange).where(RolloutChange.rollout_id == rollout_id)
    return list(session.scalars(query.order_by(RolloutChange.id)))


def record(
    session: Session,
    rollout: Rollout,
    action: str,
    reason: str,
    *,
    actor: str,
    details: dict[str, Any] | None = None,
) -> RolloutChange:
    change = RolloutChange(
        rollout_id=rollout.id,
        project_id=rollout.project_id,
        action=action,
        reason=reason,
        weights=weights_of(variants_of(rollout)),
        actor=actor,
        details=details or {},
        at=datetime.now(UTC),
    )
    session.add(change)
    session.flush()
    return change


def put_rollout(session: Session, project: Project, spec: RolloutSpec, *, actor: str) -> Rollout:
    """Start a rollout, or change the weights and policy of the running one when its
    variants (names and targets) are the same; other variants replace it."""
    session.execute(select(Project.id).where(Project.id == project.id).with_for_update())
    check_targets(session, project, spec)
    variants = spec.normalised()
    rows = [v.as_dict() for v in variants]
    current = active_rollout(session, project.id, lock=True)
    now = datetime.now(UTC)
    if current is not None and _shape(variants_of(current)) == _shape(variants):
        changed_weights = weights_of(variants_of(current)) != weights_of(variants)
        policy = spec.policy or policy_of(current)
        changed_policy = policy.model_dump(mode="json") != current.policy
        current.variants, current.policy = rows, policy.model_dump(mode="json")
        current.updated_at = now
        if changed_weights or changed_policy:
            action = "weights" if changed_weights else "policy"
            record(session, current, action, spec.reason or f"{action} set by hand", actor=actor)
        return current
    if current is not None:
        end_rollout(session, current, reason="replaced by a new rollout", actor=actor)
    rollout = Rollout(
        project_id=project.id,
        state=ACTIVE,
        variants=rows,
        policy=(spec.policy or RolloutPolicy()).model_dump(mode="json"),
        started_at=now,
        updated_at=now,
    )
    session.add(rollout)
    session.flush()
    record(session, rollout, "start", spec.reason or "rollout started", actor=actor)
    return rollout


def end_rollout(
    session: Session,
    rollout: Rollout,
    *,
    reason: str,
    actor: str,
    action: str = "end",
    details: dict[str, Any] | None = None,
) -> RolloutChange:
    """End it: from now on every request goes to the champion and records no variant."""
    now = datetime.now(UTC)
    rollout.state, rollout.ended_at, rollout.updated_at = ENDED, now, now
    return record(session, rollout, action, reason, actor=actor, details=details)


def set_weights(rollout: Rollout, weights: dict[str, float]) -> None:
    rollout.variants = [
        {**row, "weight": weights.get(row["name"], row["weight"])} for row in rollout.variants
    ]
    rollout.updated_at = datetime.now(UTC)


def check_targets(session: Session, project: Project, spec: RolloutSpec) -> list[ModelVersion]:
    """Every target names a version of the project; the first (the control) the champion."""
    found: list[ModelVersion] = []
    for index, variant in enumerate(spec.variants):
        try:
            found.append(resolve(session, project, variant.target))
        except NotFound as error:
            raise NotFound(
                f"variants[{index}].target: {error.message}", field=f"variants.{index}.target"
            ) from error
    champion = session.get(Alias, (project.id, CHAMPION))
    if champion is None or found[0].id != champion.version_id:
        raise Invalid(
            "variants[0] is the control and must serve the champion: set its target to "
            f"'champion' (it is {spec.variants[0].target!r})",
            field="variants.0.target",
        )
    return found


def target_label(session: Session, project: Project, target: str) -> str | None:
    """The version a target resolves to now (v3), or None when it no longer resolves."""
    try:
        return f"v{resolve(session, project, target).number}"
    except NotFound:
        return None


def _shape(variants: list[Variant]) -> list[tuple[str, str]]:
    return [(v.name, v.target) for v in variants]
