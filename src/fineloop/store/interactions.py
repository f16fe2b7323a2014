"""Interactions: what the model showed; logging the same id twice keeps the first record."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from fineloop.errors import NotFound
from fineloop.schemas import InteractionCreate, InteractionPublic
from fineloop.store.schema import Interaction, table

_IN_CHUNK = 500


def log_interactions(
    session: Session, project_id: int, interactions: Sequence[InteractionCreate]
) -> list[str]:
    """Store interactions and return their ids, in order; known ids are not stored again."""
    now = datetime.now(UTC)
    ids = [spec.id or uuid.uuid4().hex for spec in interactions]
    existing = existing_interactions(session, project_id, ids)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set(existing)
    for interaction_id, spec in zip(ids, interactions, strict=True):
        if interaction_id in seen:
            continue
        seen.add(interaction_id)
        created = spec.created_at or now
        rows.append(
            {
                "id": interaction_id,
                "project_id": project_id,
                "input": spec.input,
                "output": spec.output,
                "model_version": spec.model_version,
                "variant": spec.variant,
                "user_id": spec.user_id,
                "latency_ms": spec.latency_ms,
                "metadata": spec.metadata,
                "created_at": created if created.tzinfo else created.replace(tzinfo=UTC),
            }
        )
    if rows:
        session.execute(insert(table(Interaction)), rows)
    return ids


def existing_interaction_ids(session: Session, project_id: int, ids: Iterable[str]) -> set[str]:
    """Those of `ids` that exist in the project (no outputs loaded: cheap for big batches)."""
    # Core columns, not the mapped class: the ORM's statement and row handling cost more
    # than the query on a feedback batch's hundreds of ids.
    t = table(Interaction)
    wanted = list(dict.fromkeys(ids))
    found: set[str] = set()
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        found.update(
            session.scalars(select(t.c.id).where(t.c.project_id == project_id, t.c.id.in_(chunk)))
        )
    return found


def existing_interactions(session: Session, project_id: int, ids: Iterable[str]) -> dict[str, Any]:
    """Map of id -> output for those of `ids` that exist in the project."""
    wanted = list(dict.fromkeys(ids))
    found: dict[str, Any] = {}
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        rows = session.execute(
            select(Interaction.id, Interaction.output).where(
                Interaction.project_id == project_id, Interaction.id.in_(chunk)
            )
        )
        found.update({row.id: row.output for row in rows})
    return found


def shown_interactions(
    session: Session, project_id: int, ids: Iterable[str]
) -> dict[str, tuple[Any, Any]]:
    """Map of id -> (input, output) for those of `ids` that exist in the project."""
    t = table(Interaction)  # Core columns, as in existing_interaction_ids
    wanted = list(dict.fromkeys(ids))
    found: dict[str, tuple[Any, Any]] = {}
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        rows = session.execute(
            select(t.c.id, t.c.input, t.c.output).where(
                t.c.project_id == project_id, t.c.id.in_(chunk)
            )
        )
        found.update({id_: (input_, output) for id_, input_, output in rows})
    return found


def get_interaction(session: Session, project_id: int, interaction_id: str) -> Interaction:
    found = session.scalar(
        select(Interaction).where(
            Interaction.project_id == project_id, Interaction.id == interaction_id
        )
    )
    if found is None:
        raise NotFound(f"unknown interaction {interaction_id!r}", field="interaction_id")
    return found


def list_interactions(
    session: Session, project_id: int, *, limit: int = 100, before: datetime | None = None
) -> list[Interaction]:
    query = select(Interaction).where(Interaction.project_id == project_id)
    if before is not None:
        query = query.where(Interaction.created_at < before)
    query = query.order_by(Interaction.created_at.desc(), Interaction.id).limit(limit)
    return list(session.scalars(query))


def shown_item_ids(output: Any) -> list[str] | None:
    """Item ids a ranking output showed, in rank order; None when the output is no ranking."""
    if not isinstance(output, dict) or not isinstance(output.get("items"), list):
        return None
    shown: list[str] = []
    for entry in output["items"]:
        if isinstance(entry, str):
            shown.append(entry)
        elif isinstance(entry, dict):
            key = entry.get("id", entry.get("item_id"))
            if isinstance(key, str):
                shown.append(key)
    return shown


def interaction_public(row: Interaction) -> InteractionPublic:
    return InteractionPublic(
        id=row.id,
        input=row.input,
        output=row.output,
        model_version=row.model_version,
        variant=row.variant,
        user_id=row.user_id,
        latency_ms=row.latency_ms,
        metadata=row.interaction_metadata,
        created_at=row.created_at,
    )
