"""Aliases point at versions; every move is recorded, and rollback walks that history.

A move is one UPDATE in the caller's transaction, so serving sees the old target or the
new one, never anything in between.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from fineloop.errors import Conflict, NotFound
from fineloop.registry.versions import CHAMPION
from fineloop.store.schema import Alias, AliasChange, ModelVersion, Project


def set_alias(
    session: Session,
    project: Project,
    alias: str,
    version: ModelVersion,
    *,
    reason: str,
    actor: str = "user",
) -> AliasChange:
    if version.project_id != project.id:
        raise Conflict(f"version {version.id} belongs to another project")
    now = datetime.now(UTC)
    row = session.get(Alias, (project.id, alias), with_for_update=True)
    previous = None if row is None else row.version_id
    if row is None:
        session.add(Alias(project_id=project.id, name=alias, version_id=version.id, updated_at=now))
    else:
        row.version_id, row.updated_at = version.id, now
    change = AliasChange(
        project_id=project.id,
        alias=alias,
        version_id=version.id,
        previous_version_id=previous,
        reason=reason,
        actor=actor,
        at=now,
    )
    session.add(change)
    session.flush()
    return change


def remove_alias(
    session: Session, project: Project, alias: str, *, reason: str, actor: str = "user"
) -> None:
    row = session.get(Alias, (project.id, alias), with_for_update=True)
    if row is None:
        raise NotFound(f"project {project.name!r} has no alias {alias!r}")
    if alias == CHAMPION:
        raise Conflict("the champion alias cannot be removed; promote or roll back instead")
    session.add(
        AliasChange(
            project_id=project.id,
            alias=alias,
            version_id=None,
            previous_version_id=row.version_id,
            reason=reason,
            actor=actor,
            at=datetime.now(UTC),
        )
    )
    session.delete(row)
    session.flush()


def rollback(
    session: Session, project: Project, alias: str = CHAMPION, *, reason: str, actor: str = "user"
) -> AliasChange:
    """Point the alias back at the version it held before its latest move."""
    last = session.scalar(
        select(AliasChange)
        .where(AliasChange.project_id == project.id, AliasChange.alias == alias)
        .order_by(AliasChange.id.desc())
        .limit(1)
    )
    if last is None or last.previous_version_id is None:
        raise Conflict(f"alias {alias!r} of project {project.name!r} has nothing to roll back to")
    target = session.get(ModelVersion, last.previous_version_id)
    assert target is not None
    return set_alias(session, project, alias, target, reason=reason, actor=actor)


def aliases_of(session: Session, project_id: int) -> dict[int, list[str]]:
    """version id -> its alias names."""
    found: dict[int, list[str]] = {}
    for row in session.scalars(select(Alias).where(Alias.project_id == project_id)):
        found.setdefault(row.version_id, []).append(row.name)
    return found


def history(session: Session, project_id: int, alias: str | None = None) -> list[AliasChange]:
    query = select(AliasChange).where(AliasChange.project_id == project_id)
    if alias is not None:
        query = query.where(AliasChange.alias == alias)
    return list(session.scalars(query.order_by(AliasChange.id)))
