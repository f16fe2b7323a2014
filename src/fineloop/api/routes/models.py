"""The model registry of a project: versions, comparisons, aliases, promotion, rollback.

Versions are immutable: there is no route that changes or deletes one. Promotion and
rollback move an alias atomically and record who moved it and why.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from fineloop.api.deps import Admin, StoreDep
from fineloop.api.responses import CHANGE, KEYED
from fineloop.registry import manage
from fineloop.registry.versions import CHAMPION
from fineloop.serving import champion_changed
from fineloop.store.projects import get_project
from fineloop.validation import INPUT

router = APIRouter(
    prefix="/v1/projects/{project}", tags=["models"], dependencies=[Admin], responses=KEYED
)

Ref = Annotated[str, Field(min_length=1, max_length=64, description="v3, 3, or an alias.")]
Reason = Field(default=None, max_length=2000, description="Why; kept in the alias history.")


class PromoteRequest(BaseModel):
    model_config = INPUT

    version: Ref
    reason: str | None = Reason
    force: bool = Field(
        default=False,
        description="Promote a version that failed the promotion gate (the history records "
        "that it was forced).",
    )


class RollbackRequest(BaseModel):
    model_config = INPUT

    alias: str = Field(default=CHAMPION, min_length=1, max_length=64, description="Alias.")
    reason: str | None = Reason


@router.get("/versions")
def list_versions(project: str, store: StoreDep) -> list[dict[str, Any]]:
    """Every version, v0 (the base model) first, with its metrics, gate and aliases."""
    with store.read() as session:
        return manage.versions_public(session, get_project(session, project))


@router.get("/versions/compare")
def compare(
    project: str,
    store: StoreDep,
    a: Annotated[str, Query(min_length=1, max_length=64, description="First version.")],
    b: Annotated[str, Query(min_length=1, max_length=64, description="Second version.")],
) -> dict[str, Any]:
    """Metrics side by side with deltas (b - a), on one shared split when available."""
    with store.read() as session:
        return manage.compare(session, get_project(session, project), a, b)


@router.get("/versions/{ref}")
def show_version(project: str, ref: str, store: StoreDep) -> dict[str, Any]:
    with store.read() as session:
        return manage.version_detail(session, get_project(session, project), ref)


@router.post("/promote", responses=CHANGE)
def promote(
    project: str, body: PromoteRequest, store: StoreDep, request: Request
) -> dict[str, Any]:
    """Make a version the champion. 409 if it failed the gate, unless `force` is true."""
    with store.write() as session:
        found = get_project(session, project)
        moved = manage.promote(
            session, found, body.version, force=body.force, reason=body.reason, actor="api"
        )
    champion_changed(request.app, project)  # build the new champion's index now
    return moved


@router.post("/rollback", responses=CHANGE)
def rollback(
    project: str, store: StoreDep, request: Request, body: RollbackRequest | None = None
) -> dict[str, Any]:
    """Point the alias (champion by default) back where it was before its last move."""
    body = body or RollbackRequest()
    with store.write() as session:
        found = get_project(session, project)
        moved = manage.roll_back(session, found, body.alias, reason=body.reason, actor="api")
    champion_changed(request.app, project)
    return moved


@router.get("/aliases")
def aliases(project: str, store: StoreDep) -> list[dict[str, Any]]:
    with store.read() as session:
        return manage.aliases_public(session, get_project(session, project))


@router.get("/aliases/history")
def alias_history(
    project: str,
    store: StoreDep,
    alias: Annotated[str | None, Query(max_length=64, description="Only this alias.")] = None,
) -> list[dict[str, Any]]:
    """Every alias move, oldest first, with reason and actor."""
    with store.read() as session:
        return manage.history_public(session, get_project(session, project), alias)
