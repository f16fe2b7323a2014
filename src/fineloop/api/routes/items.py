"""Items: the catalog a retrieval model ranks."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from fineloop.api.deps import Admin, SettingsDep, StoreDep, check_batch_size
from fineloop.api.responses import CHANGE, KEYED
from fineloop.errors import NotFound
from fineloop.operations import store_items
from fineloop.schemas import ItemPublic, ItemsUpsert
from fineloop.serving import items_changed
from fineloop.store.items import item_public, list_items
from fineloop.store.projects import get_project
from fineloop.store.schema import Item
from fineloop.validation import INT64_MAX

router = APIRouter(
    prefix="/v1/projects/{project}/items", tags=["items"], dependencies=[Admin], responses=KEYED
)


@router.put("", responses=CHANGE)
def upsert(
    project: str, body: ItemsUpsert, store: StoreDep, settings: SettingsDep, request: Request
) -> dict[str, Any]:
    """Insert or replace up to 10,000 items by id."""
    check_batch_size(len(body.items), settings)
    upserted = store_items(store, project, body.items)
    items_changed(request.app, project, [item.id for item in body.items])
    return {"upserted": upserted}


@router.get("")
def list_page(
    project: str,
    store: StoreDep,
    after: Annotated[
        int, Query(ge=0, le=INT64_MAX, description="Cursor from the previous page.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    contains: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Only items whose id or text holds this (any case).",
        ),
    ] = None,
) -> dict[str, Any]:
    with store.read() as session:
        project_id = get_project(session, project).id
        rows = list_items(session, project_id, after=after, limit=limit, contains=contains)
    return {
        "items": [item_public(row) for row in rows],
        "next_cursor": rows[-1].id if len(rows) == limit else None,
    }


@router.get("/{item_id:path}")  # ids may hold "/" (URLs, file paths): the rest of the path
def show(project: str, item_id: str, store: StoreDep) -> ItemPublic:
    with store.read() as session:
        project_id = get_project(session, project).id
        row = session.scalar(
            select(Item).where(Item.project_id == project_id, Item.item_id == item_id)
        )
        if row is None:
            raise NotFound(f"unknown item {item_id!r} in project {project!r}")
        return item_public(row)
