"""What people do with the registry: list, show, compare, promote, roll back.

Shared by the API and the CLI. Every change is one alias move in the caller's transaction,
recorded in the alias history with its reason and actor; versions themselves never change.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fineloop.errors import Conflict
from fineloop.registry.aliases import aliases_of, history, rollback, set_alias
from fineloop.registry.versions import CHAMPION, list_versions, resolve, version_public
from fineloop.store.schema import Alias, ModelVersion, Project


def versions_public(session: Session, project: Project) -> list[dict[str, Any]]:
    names = aliases_of(session, project.id)
    return [version_public(v, names.get(v.id)) for v in list_versions(session, project.id)]


def version_detail(session: Session, project: Project, ref: str) -> dict[str, Any]:
    version = resolve(session, project, ref)
    return version_public(version, aliases_of(session, project.id).get(version.id))


def promote(
    session: Session,
    project: Project,
    ref: str,
    *,
    force: bool = False,
    reason: str | None = None,
    actor: str = "user",
) -> dict[str, Any]:
    """Make `ref` the champion. A version that failed the gate needs `force`, and the
    history then says it was forced past the gate and why."""
    version = resolve(session, project, ref)
    current = session.get(Alias, (project.id, CHAMPION), with_for_update=True)
    label = f"v{version.number}"
    if current is not None and current.version_id == version.id:
        return {"alias": CHAMPION, "version": label, "previous": label, "changed": False}
    failed_gate = version.gate.get("passed") is False
    if failed_gate and not force:
        raise Conflict(
            f"{label} did not pass the promotion gate ({version.gate.get('reason', 'no reason')}); "
            "promote it anyway with force=true and a reason",
            field="force",
        )
    text = reason or "manual promotion"
    if failed_gate:
        text = f"forced past the gate: {text}"
    change = set_alias(session, project, CHAMPION, version, reason=text, actor=actor)
    return {
        "alias": CHAMPION,
        "version": label,
        "previous": _label(session, change.previous_version_id),
        "changed": True,
        "forced": failed_gate,
        "reason": text,
    }


def roll_back(
    session: Session,
    project: Project,
    alias: str = CHAMPION,
    *,
    reason: str | None = None,
    actor: str = "user",
) -> dict[str, Any]:
    """Point `alias` back at the version it held before its latest move (409 if none)."""
    change = rollback(session, project, alias, reason=reason or "rollback", actor=actor)
    return {
        "alias": alias,
        "version": _label(session, change.version_id),
        "previous": _label(session, change.previous_version_id),
        "reason": change.reason,
    }


def aliases_public(session: Session, project: Project) -> list[dict[str, Any]]:
    rows = session.scalars(select(Alias).where(Alias.project_id == project.id).order_by(Alias.name))
    return [
        {
            "alias": row.name,
            "version": _label(session, row.version_id),
            "version_id": row.version_id,
            "updated_at": row.updated_at.isoformat(),
        }
        for row in rows
    ]


def history_public(
    session: Session, project: Project, alias: str | None = None
) -> list[dict[str, Any]]:
    """Every alias move, oldest first."""
    return [
        {
            "id": change.id,
            "alias": change.alias,
            "version": _label(session, change.version_id),
            "previous": _label(session, change.previous_version_id),
            "reason": change.reason,
            "actor": change.actor,
            "at": change.at.isoformat(),
        }
        for change in history(session, project.id, alias)
    ]


def compare(session: Session, project: Project, a_ref: str, b_ref: str) -> dict[str, Any]:
    """Metrics of two versions side by side with deltas (b - a).

    A training run evaluates its candidate, the champion and the base model on one held-out
    split; when one of the two versions' runs measured both, those numbers are used
    (`same_split`: true). Otherwise each version's own numbers are shown, which come from
    different splits and compare only roughly."""
    a, b = resolve(session, project, a_ref), resolve(session, project, b_ref)
    la, lb = f"v{a.number}", f"v{b.number}"
    source: ModelVersion | None = None
    for version in (b, a):
        measured = _measured(version)
        if la in measured and lb in measured:
            source = version
            break
    if source is not None:
        measured = _measured(source)
        ma, mb = measured[la], measured[lb]
    else:
        ma, mb = _measured(a).get(la, {}), _measured(b).get(lb, {})
    rows = {
        name: {
            "a": ma.get(name),
            "b": mb.get(name),
            "delta": mb[name] - ma[name] if name in ma and name in mb else None,
        }
        for name in sorted(set(ma) | set(mb))
    }
    names = aliases_of(session, project.id)
    return {
        "a": version_public(a, names.get(a.id)),
        "b": version_public(b, names.get(b.id)),
        "same_split": source is not None,
        "evaluated_by": f"v{source.number}" if source is not None else None,
        "snapshot_id": source.snapshot_id if source is not None else None,
        "primary": (source or b).metrics.get("primary") or a.metrics.get("primary"),
        "metrics": rows,
    }


def _measured(version: ModelVersion) -> dict[str, dict[str, float]]:
    """version label -> metrics, for every model this version's training run evaluated."""
    metrics = version.metrics
    found: dict[str, dict[str, float]] = {}
    for role, label in (
        ("base", metrics.get("base_version")),
        ("champion", metrics.get("champion_version")),
        ("candidate", f"v{version.number}"),
    ):
        if label and isinstance(metrics.get(role), dict):
            found[label] = metrics[role]
    return found


def _label(session: Session, version_id: int | None) -> str | None:
    if version_id is None:
        return None
    version = session.get(ModelVersion, version_id)
    return f"v{version.number}" if version is not None else None
