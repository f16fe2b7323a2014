"""Snapshot rows: build, publish under the artifact root, record; find and list them.

A snapshot's id is the hash of its content, so building twice over the same feedback
lands on the same folder and the same row: publishing and recording are both idempotent.
This module stays free of the ML stack at import (the API lists snapshots); the builder
is imported only when a build runs.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fineloop import artifacts
from fineloop.config import Settings
from fineloop.data import read_project
from fineloop.errors import Invalid, NotFound
from fineloop.registry.bootstrap import base_model_of
from fineloop.registry.versions import CHAMPION, resolve
from fineloop.store import Store
from fineloop.store.projects import get_project, training_policy_of
from fineloop.store.schema import Project, Snapshot
from fineloop.tasks import get_task
from fineloop.tasks.base import BuiltSnapshot, Task

_MIN_PREFIX = 8


def record_snapshot(
    session: Session, project: Project, built: BuiltSnapshot, final_uri: str
) -> Snapshot:
    """Insert the row for a published snapshot, or return the one already there."""
    existing = session.get(Snapshot, built.id)
    if existing is not None:
        return existing
    row = Snapshot(
        id=built.id,
        project_id=project.id,
        task=project.task,
        uri=final_uri,
        splits=dict(built.splits),
        stats=dict(built.stats),
        config=dict(built.config),
        feedback_watermark=built.feedback_watermark,
        created_at=datetime.now(UTC),
    )
    try:
        with session.begin_nested():  # a concurrent builder may insert the same id first
            session.add(row)
    except IntegrityError:
        found = session.get(Snapshot, built.id)
        if found is None:
            raise
        return found
    return row


def get_snapshot(session: Session, project: Project, snapshot_id: str) -> Snapshot:
    """A snapshot of the project by its id, or by a unique prefix of 8+ characters."""
    row = session.get(Snapshot, snapshot_id)
    if row is not None and row.project_id == project.id:
        return row
    if len(snapshot_id) >= _MIN_PREFIX and snapshot_id.isalnum():
        found = list(
            session.scalars(
                select(Snapshot)
                .where(Snapshot.project_id == project.id, Snapshot.id.startswith(snapshot_id))
                .limit(2)
            )
        )
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise Invalid(f"snapshot prefix {snapshot_id!r} is ambiguous; give more of the id")
    raise NotFound(
        f"project {project.name!r} has no snapshot {snapshot_id!r}; "
        "list them with GET /v1/projects/{project}/snapshots",
        field="snapshot",
    )


def list_snapshots(session: Session, project_id: int) -> list[Snapshot]:
    """The project's snapshots, newest first."""
    return list(
        session.scalars(
            select(Snapshot)
            .where(Snapshot.project_id == project_id)
            .order_by(Snapshot.created_at.desc(), Snapshot.id)
        )
    )


def snapshot_public(row: Snapshot) -> dict[str, Any]:
    return {
        "id": row.id,
        "task": row.task,
        "uri": row.uri,
        "splits": row.splits,
        "stats": row.stats,
        "config": row.config,
        "feedback_watermark": row.feedback_watermark,
        "created_at": row.created_at.isoformat(),
    }


def build_and_publish(
    store: Store,
    settings: Settings,
    project_name: str,
    *,
    seed: int | None = None,
    label: str = "snapshot",
    train_overrides: Mapping[str, Any] | None = None,
    **options: Any,
) -> Snapshot:
    """Build the project's snapshot through its task in a scratch folder, move it into
    place, record it. The task gets the project's records from the shared reader and the
    model now serving (`model_path`, unless given: the champion, else the base model);
    `options` go to its builder (embedding: `config`); `train_overrides` (a job's) are
    merged over the project's `training_policy.train` in what the builder reads. `seed`
    defaults to the project's training policy seed. An identical snapshot built before is
    reused: its folder and row stay as they are.
    """
    with store.read() as session:
        project = get_project(session, project_name)
        task = get_task(project.task)
        current = _serving_model(session, project, task)
    if seed is None:
        seed = training_policy_of(project).seed
    if options.get("model_path") is None:
        options["model_path"] = artifacts.fetch(settings, current)  # a local path
    data = read_project(store, project)
    if train_overrides:  # a job's overrides reach a builder that reads `train` too
        merged = {**data.project.train, **train_overrides}
        data = replace(data, project=replace(data.project, train=merged))
    scratch = artifacts.scratch_dir(settings, project_name, label)
    try:
        built = task.build(data, settings, scratch, seed=seed, **options)
        final = artifacts.publish(
            settings, scratch, artifacts.snapshot_location(settings, project_name, built.id)
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # gone already when published
    with store.write() as session:
        row = record_snapshot(session, get_project(session, project_name), built, final)
    return row


def _serving_model(session: Session, project: Project, task: Task) -> str:
    """The champion's artifact, or the base model before anything was registered."""
    try:
        return resolve(session, project, CHAMPION).artifact_uri
    except NotFound:
        return base_model_of(project, task)


def built_snapshot(row: Snapshot, settings: Settings | None = None) -> BuiltSnapshot:
    """The recorded snapshot in the shape tasks take; with `settings`, one on a URL
    artifact root is read from its local cached copy."""
    return BuiltSnapshot(
        id=row.id,
        path=Path(row.uri if settings is None else artifacts.fetch(settings, row.uri)),
        splits=row.splits,
        stats=row.stats,
        config=row.config,
        feedback_watermark=row.feedback_watermark,
    )
