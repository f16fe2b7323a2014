"""A project's snapshots: the immutable datasets its versions were trained on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter

from fineloop.api.deps import Admin, StoreDep
from fineloop.api.responses import KEYED
from fineloop.snapshots import get_snapshot, list_snapshots, snapshot_public
from fineloop.store.projects import get_project

router = APIRouter(
    prefix="/v1/projects/{project}/snapshots",
    tags=["snapshots"],
    dependencies=[Admin],
    responses=KEYED,
)


@router.get("")
def list_all(project: str, store: StoreDep) -> list[dict[str, Any]]:
    """Newest first, with split sizes and build statistics."""
    with store.read() as session:
        rows = list_snapshots(session, get_project(session, project).id)
        return [snapshot_public(row) for row in rows]


@router.get("/{snapshot_id}")
def show(project: str, snapshot_id: str, store: StoreDep) -> dict[str, Any]:
    """One snapshot (by id or a unique prefix of 8+ characters), with its size on disk."""
    with store.read() as session:
        row = get_snapshot(session, get_project(session, project), snapshot_id)
        return snapshot_public(row) | {"bytes": _size(row.uri)}


def _size(uri: str) -> int | None:
    """Bytes under a local snapshot folder (None for remote or missing ones)."""
    folder = Path(uri)
    if not folder.is_dir():
        return None
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
