"""v0: the project's base model as a version, champion until something beats it.

Training and serving both need a champion before any training ran, so either may call
`ensure_base_version` first; it is idempotent, also when two processes call it at once.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fineloop.registry.aliases import set_alias
from fineloop.registry.versions import CHAMPION, register_version
from fineloop.store.schema import Alias, ModelVersion, Project
from fineloop.tasks.base import Task


def base_model_of(project: Project, task: Task) -> str:
    return project.base_model or task.default_base_model()


def ensure_base_version(session: Session, project: Project, task: Task) -> ModelVersion:
    """The project's v0, created with the champion alias on it when missing.

    Run it in a write transaction. The project row is locked first, so concurrent callers on
    PostgreSQL queue up (SQLite write transactions are serialized already); a savepoint
    catches the unique (project, number) violation should a caller arrive without the lock.
    """
    session.execute(select(Project.id).where(Project.id == project.id).with_for_update())
    found = _v0(session, project.id)
    if found is None:
        base = base_model_of(project, task)
        try:
            with session.begin_nested():
                found = register_version(
                    session,
                    project,
                    artifact_uri=base,
                    base_model=base,
                    number=0,
                    config={"base_model": base},
                )
        except IntegrityError:
            found = _v0(session, project.id)
            assert found is not None, "v0 insert failed without a concurrent v0"
    if session.get(Alias, (project.id, CHAMPION)) is None:
        set_alias(session, project, CHAMPION, found, reason="base model", actor="fineloop")
    return found


def _v0(session: Session, project_id: int) -> ModelVersion | None:
    return session.scalar(
        select(ModelVersion).where(ModelVersion.project_id == project_id, ModelVersion.number == 0)
    )
