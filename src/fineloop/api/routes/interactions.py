"""Interactions: one model call as the user saw it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from fineloop.api.deps import Admin, Ingest, SettingsDep, StoreDep, check_batch_size
from fineloop.api.responses import CHANGE, KEYED
from fineloop.operations import store_interactions
from fineloop.schemas import InteractionCreate, InteractionPublic, InteractionsCreate
from fineloop.store.interactions import get_interaction, interaction_public, list_interactions
from fineloop.store.projects import get_project

router = APIRouter(
    prefix="/v1/projects/{project}/interactions", tags=["interactions"], responses=KEYED
)


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Ingest], responses=CHANGE)
def log_one(project: str, body: InteractionCreate, store: StoreDep) -> dict[str, str]:
    """Log one interaction; returns its id (yours, or a generated one)."""
    return {"id": store_interactions(store, project, [body])[0]}


@router.post("/batch", status_code=status.HTTP_201_CREATED, dependencies=[Ingest], responses=CHANGE)
def log_batch(
    project: str, body: InteractionsCreate, store: StoreDep, settings: SettingsDep
) -> dict[str, Any]:
    """Log up to 10,000 interactions at once, all or nothing."""
    check_batch_size(len(body.interactions), settings)
    return {"ids": store_interactions(store, project, body.interactions)}


@router.get("", dependencies=[Admin])
def list_recent(
    project: str,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: datetime | None = None,
) -> list[InteractionPublic]:
    with store.read() as session:
        rows = list_interactions(
            session, get_project(session, project).id, limit=limit, before=before
        )
        return [interaction_public(row) for row in rows]


@router.get("/{interaction_id:path}", dependencies=[Admin])  # ids may hold "/"
def show(project: str, interaction_id: str, store: StoreDep) -> InteractionPublic:
    with store.read() as session:
        row = get_interaction(session, get_project(session, project).id, interaction_id)
        return interaction_public(row)
