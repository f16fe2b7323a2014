"""A project's rollout: split traffic between versions, watch per-variant online metrics,
let the policy roll back or promote on significance (see fineloop.rollouts)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from fineloop.api.deps import Admin, StoreDep
from fineloop.api.responses import BUSY, CHANGE, CONFLICT, KEYED
from fineloop.errors import NotFound
from fineloop.rollouts.public import rollout_public
from fineloop.rollouts.routing import warm as start_indexing
from fineloop.rollouts.spec import RolloutSpec
from fineloop.rollouts.store import active_rollout, end_rollout, put_rollout
from fineloop.serving import ServingState, get_serving
from fineloop.store.projects import get_project

router = APIRouter(
    prefix="/v1/projects/{project}/rollout",
    tags=["rollouts"],
    dependencies=[Admin],
    responses=KEYED,
)
USER = "user"


@router.get("")
def show(project: str, store: StoreDep) -> dict[str, Any]:
    """The active rollout (else the last one that ended): variants with the version each
    serves, policy, per-variant metrics, the control-vs-challenger test, and history."""
    with store.read() as session:
        return rollout_public(session, get_project(session, project))


@router.put("", responses=CHANGE)
def put(project: str, body: RolloutSpec, store: StoreDep, request: Request) -> dict[str, Any]:
    """Start a rollout, or change the weights or policy of the running one (same variant
    names and targets). Weights are relative and stored normalised to sum 1."""
    with store.write() as session:
        put_rollout(session, get_project(session, project), body, actor=USER)
    _changed(request, project, warm=True)
    return show(project, store)


@router.delete("", responses=CONFLICT)
def end(
    project: str,
    store: StoreDep,
    request: Request,
    reason: Annotated[
        str | None, Query(max_length=2000, description="Why; kept in the history.")
    ] = None,
) -> dict[str, Any]:
    """End the active rollout: every request goes to the champion again."""
    with store.write() as session:
        found = get_project(session, project)
        rollout = active_rollout(session, found.id, lock=True)
        if rollout is None:
            raise NotFound(f"project {project!r} has no active rollout; start one with PUT")
        end_rollout(session, rollout, reason=reason or "ended by hand", actor=USER)
    _changed(request, project)
    return show(project, store)


@router.post("/evaluate", responses={**CONFLICT, **BUSY})
def evaluate(project: str, store: StoreDep, request: Request) -> dict[str, Any]:
    """Run the policy now (it also runs after feedback, debounced); what it did, if anything."""
    with store.read() as session:
        get_project(session, project)
    taken = _serving(request).rollouts.evaluate(project)
    return {"actions": taken, "rollout": show(project, store)}


def _serving(request: Request) -> ServingState:
    return get_serving(request.app)


def _changed(request: Request, project: str, *, warm: bool = False) -> None:
    """Serving in this process sees the change at once; a new challenger starts indexing."""
    state: ServingState | None = getattr(request.app.state, "serving", None)
    if state is None:
        return
    state.rollouts.forget(project)
    if warm:
        start_indexing(state, project)
