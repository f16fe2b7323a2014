"""The one reader of a project's feedback, interactions and items for training.

Everything is read in one transaction up to the largest feedback id at that moment, so
feedback arriving during a build is left for the next one (the snapshot's watermark).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fineloop.data.records import (
    CatalogItem,
    FeedbackRecord,
    ProjectData,
    ProjectInfo,
    ShownInteraction,
)
from fineloop.feedback.rewards import effective_reward, usable_for_training
from fineloop.store import Store
from fineloop.store.projects import get_project, policy_of, training_policy_of
from fineloop.store.schema import Feedback, Interaction, Item, Project

_CHUNK = 500  # ids per IN (...) list: well under every database's parameter limit


def read_project(
    store: Store,
    project: str | Project,
    *,
    kinds: Collection[str] | None = None,
    catalog: bool = True,
) -> ProjectData:
    """The project's feedback (only `kinds` when given) with the interactions it refers
    to, and its catalog unless `catalog` is False."""
    with store.read() as session:
        row = get_project(session, project if isinstance(project, str) else project.name)
        return _read(session, row, kinds, catalog)


def _read(
    session: Session, project: Project, kinds: Collection[str] | None, catalog: bool
) -> ProjectData:
    policy = policy_of(project)
    train = dict(training_policy_of(project).train)
    options = dict(project.task_options or {})
    info = ProjectInfo(project.name, project.task, project.base_model, policy, train, options)
    items = _catalog(session, project.id) if catalog else ()
    watermark = session.scalar(
        select(func.max(Feedback.id)).where(Feedback.project_id == project.id)
    )
    if watermark is None:
        return ProjectData(info, (), items, 0, None)
    scope = [Feedback.project_id == project.id, Feedback.id <= watermark]
    as_of = session.scalar(select(func.max(Feedback.timestamp)).where(*scope))
    assert as_of is not None
    if kinds is not None:
        scope.append(Feedback.kind.in_(sorted(kinds)))
    rows = list(session.scalars(select(Feedback).where(*scope).order_by(Feedback.id)))
    shown = _interactions(session, project.id, _referenced(rows))
    records = []
    for row in rows:
        effective = effective_reward(policy, row.reward, row.timestamp, as_of)
        records.append(
            FeedbackRecord(
                id=row.id,
                kind=row.kind,
                payload=dict(row.payload or {}),
                input=row.input,
                user_id=row.user_id,
                timestamp=row.timestamp,
                reward=row.reward,
                effective_reward=effective,
                trainable=usable_for_training(policy, effective),
                metadata=_mapping(row.feedback_metadata),
                interaction_id=row.interaction_id,
                interaction=shown.get(row.interaction_id) if row.interaction_id else None,
            )
        )
    return ProjectData(info, tuple(records), items, watermark, as_of, shown)


def _referenced(rows: Iterable[Feedback]) -> set[str | None]:
    """Interactions the rows refer to: their own, and a preference's chosen and rejected."""
    ids: set[str | None] = set()
    for row in rows:
        ids.add(row.interaction_id)
        if row.kind == "preference" and isinstance(row.payload, dict):
            ids.add(row.payload.get("chosen_interaction_id"))
            ids.add(row.payload.get("rejected_interaction_id"))
    return ids


def _catalog(session: Session, project_id: int) -> tuple[CatalogItem, ...]:
    query = select(Item.item_id, Item.text, Item.item_metadata).where(Item.project_id == project_id)
    found = [CatalogItem(i, text, _mapping(meta)) for i, text, meta in session.execute(query)]
    # Sorted here, not in SQL: collations differ between SQLite and PostgreSQL.
    return tuple(sorted(found, key=lambda item: item.item_id))


def _interactions(
    session: Session, project_id: int, ids: Iterable[str | None]
) -> dict[str, ShownInteraction]:
    wanted = sorted(i for i in ids if i)
    found: dict[str, ShownInteraction] = {}
    for start in range(0, len(wanted), _CHUNK):
        query = select(Interaction).where(
            Interaction.project_id == project_id,
            Interaction.id.in_(wanted[start : start + _CHUNK]),
        )
        for row in session.scalars(query):
            found[row.id] = ShownInteraction(
                id=row.id,
                input=row.input,
                output=row.output,
                model_version=row.model_version,
                variant=row.variant,
                user_id=row.user_id,
                metadata=_mapping(row.interaction_metadata),
                created_at=row.created_at,
            )
    return found


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}
