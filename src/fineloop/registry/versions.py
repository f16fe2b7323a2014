"""Model versions: immutable rows numbered per project (v0 is the project's base model)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fineloop import __version__
from fineloop.errors import Invalid, NotFound
from fineloop.store.schema import Alias, ModelVersion, Project
from fineloop.validation import version_number

CHAMPION = "champion"
CHALLENGER = "challenger"
INT32_MAX = 2**31 - 1  # the column's type on PostgreSQL


def register_version(
    session: Session,
    project: Project,
    *,
    artifact_uri: str,
    base_model: str,
    number: int | None = None,
    parent_id: int | None = None,
    snapshot_id: str | None = None,
    job_id: int | None = None,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    gate: dict[str, Any] | None = None,
) -> ModelVersion:
    """Insert a new version; the caller's transaction makes it visible all at once."""
    if number is None:
        number = next_number(session, project.id)
    version = ModelVersion(
        project_id=project.id,
        number=number,
        artifact_uri=artifact_uri,
        base_model=base_model,
        parent_id=parent_id,
        snapshot_id=snapshot_id,
        job_id=job_id,
        config=config or {},
        metrics=metrics or {},
        gate=gate or {},
        fineloop_version=__version__,
        created_at=datetime.now(UTC),
    )
    session.add(version)
    session.flush()
    return version


def next_number(session: Session, project_id: int) -> int:
    latest = session.scalar(
        select(func.max(ModelVersion.number)).where(ModelVersion.project_id == project_id)
    )
    return 0 if latest is None else latest + 1


def list_versions(session: Session, project_id: int) -> list[ModelVersion]:
    return list(
        session.scalars(
            select(ModelVersion)
            .where(ModelVersion.project_id == project_id)
            .order_by(ModelVersion.number)
        )
    )


def resolve(session: Session, project: Project, ref: str) -> ModelVersion:
    """A version by alias (`champion`), by number (`v3` or `3`)."""
    alias = session.get(Alias, (project.id, ref))
    if alias is not None:
        found = session.get(ModelVersion, alias.version_id)
        if found is not None:
            return found
    try:
        number = version_number(ref)
    except ValueError as error:
        raise Invalid(str(error), field="version") from error
    if number is not None and number <= INT32_MAX:  # a larger one names no stored version
        found = session.scalar(
            select(ModelVersion).where(
                ModelVersion.project_id == project.id, ModelVersion.number == number
            )
        )
        if found is not None:
            return found
    raise NotFound(
        f"project {project.name!r} has no version or alias {ref!r}; "
        "list them with GET /v1/projects/{project}/versions",
        field="version",
    )


def version_public(version: ModelVersion, aliases: list[str] | None = None) -> dict[str, Any]:
    return {
        "id": version.id,
        "version": f"v{version.number}",
        "number": version.number,
        "artifact_uri": version.artifact_uri,
        "base_model": version.base_model,
        "parent_id": version.parent_id,
        "snapshot_id": version.snapshot_id,
        "job_id": version.job_id,
        "config": version.config,
        "metrics": version.metrics,
        "gate": version.gate,
        "fineloop_version": version.fineloop_version,
        "created_at": version.created_at.isoformat(),
        "aliases": aliases or [],
    }
