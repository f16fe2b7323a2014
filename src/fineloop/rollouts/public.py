"""The public shape of a project's rollout, as the API, CLI, SDK and dashboard show it."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from fineloop.rollouts.metrics import evaluation
from fineloop.rollouts.spec import RolloutPolicy
from fineloop.rollouts.store import ACTIVE, history_of, latest_rollout, target_label
from fineloop.store.schema import Project, RolloutChange


def rollout_public(session: Session, project: Project) -> dict[str, Any]:
    """The active rollout, else the last one that ended, else an empty, inactive one."""
    rollout = latest_rollout(session, project.id)
    if rollout is None:
        return {
            "id": None,
            "project": project.name,
            "active": False,
            "state": None,
            "started_at": None,
            "ended_at": None,
            "variants": [],
            "policy": RolloutPolicy().model_dump(mode="json"),
            "metrics": [],
            "comparison": None,
            "comparisons": [],
            "history": [],
        }
    metrics, comparisons = evaluation(session, rollout)
    return {
        "id": rollout.id,
        "project": project.name,
        "active": rollout.state == ACTIVE,
        "state": rollout.state,
        "started_at": rollout.started_at.isoformat(),
        "ended_at": rollout.ended_at.isoformat() if rollout.ended_at else None,
        "variants": [
            {**row, "version": target_label(session, project, row["target"])}
            for row in rollout.variants
        ],
        "policy": rollout.policy,
        "metrics": metrics,
        "comparison": comparisons[0] if comparisons else None,
        "comparisons": comparisons,
        "history": [change_public(c) for c in history_of(session, rollout.id)],
    }


def change_public(change: RolloutChange) -> dict[str, Any]:
    return {
        "id": change.id,
        "at": change.at.isoformat(),
        "action": change.action,
        "reason": change.reason,
        "weights": change.weights,
        "actor": change.actor,
        "details": change.details,
    }
