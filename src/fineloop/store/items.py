"""Items: the catalog a retrieval model ranks, upserted in bulk."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from fineloop.schemas import ItemIn, ItemPublic
from fineloop.store.schema import Item, table

_CHUNK = 2_000


def upsert_items(session: Session, project_id: int, items: Sequence[ItemIn]) -> int:
    """Insert new items and overwrite text and metadata of existing ones; returns the count."""
    now = datetime.now(UTC)
    latest = {item.id: item for item in items}  # the last duplicate in a request wins
    rows: list[dict[str, Any]] = [
        {
            "project_id": project_id,
            "item_id": item.id,
            "text": item.text,
            "metadata": item.metadata,
            "created_at": now,
            "updated_at": now,
        }
        for item in latest.values()
    ]
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    item_table = table(Item)
    for start in range(0, len(rows), _CHUNK):
        statement = insert(item_table)
        statement = statement.on_conflict_do_update(
            index_elements=[item_table.c.project_id, item_table.c.item_id],
            set_={
                "text": statement.excluded.text,
                "metadata": statement.excluded["metadata"],
                "updated_at": statement.excluded.updated_at,
            },
        )
        session.execute(statement, rows[start : start + _CHUNK])
    return len(rows)


def existing_item_ids(session: Session, project_id: int, ids: Sequence[str]) -> set[str]:
    wanted = list(dict.fromkeys(ids))
    found: set[str] = set()
    for start in range(0, len(wanted), _CHUNK):
        found.update(
            session.scalars(
                select(Item.item_id).where(
                    Item.project_id == project_id, Item.item_id.in_(wanted[start : start + _CHUNK])
                )
            )
        )
    return found


def items_query(project_id: int) -> Select[Item]:
    return select(Item).where(Item.project_id == project_id).order_by(Item.id)


def list_items(
    session: Session,
    project_id: int,
    *,
    after: int = 0,
    limit: int = 100,
    contains: str | None = None,
) -> list[Item]:
    """A page of the catalog; with `contains`, only items whose id or text holds it (any
    case): how a reviewer finds the right item by a few words."""
    query = items_query(project_id).where(Item.id > after)
    if contains:
        query = query.where(
            or_(
                Item.item_id.icontains(contains, autoescape=True),
                Item.text.icontains(contains, autoescape=True),
            )
        )
    return list(session.scalars(query.limit(limit)))


def item_public(item: Item) -> ItemPublic:
    return ItemPublic(
        id=item.item_id, text=item.text, metadata=item.item_metadata, updated_at=item.updated_at
    )
