"""Feedback: single events and all-or-nothing batches, listing and filtering."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request, Response, status
from sqlalchemy import select

from fineloop.api.deps import Admin, Ingest, SettingsDep, StoreDep, check_batch_size
from fineloop.api.responses import CHANGE, KEYED
from fineloop.errors import NotFound
from fineloop.feedback.events import FeedbackEvent, FeedbackKind
from fineloop.feedback.query import FeedbackFilter, feedback_public, page
from fineloop.operations import store_feedback
from fineloop.schemas import BatchAck, FeedbackAck, FeedbackBatch, FeedbackPage, FeedbackPublic
from fineloop.serving import feedback_changed
from fineloop.store.projects import get_project, policy_of
from fineloop.store.schema import Feedback
from fineloop.validation import INT64_MAX

router = APIRouter(prefix="/v1/projects/{project}/feedback", tags=["feedback"], responses=KEYED)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Ingest],
    responses={
        200: {
            "model": FeedbackAck,
            "description": "Its idempotency key was seen: not stored again.",
        },
        **CHANGE,
    },
)
def post_one(
    project: str,
    event: Annotated[FeedbackEvent, Body()],
    store: StoreDep,
    response: Response,
    request: Request,
) -> FeedbackAck:
    """Store one event. 201 when stored, 200 when its idempotency key was seen before."""
    stored = store_feedback(store, project, [event], late_interactions_wait=_late(request))[0]
    feedback_changed(request.app, project)
    if not stored.created:
        response.status_code = status.HTTP_200_OK
    return FeedbackAck(id=stored.id, created=stored.created, reward=stored.reward)


@router.post("/batch", status_code=status.HTTP_201_CREATED, dependencies=[Ingest], responses=CHANGE)
def post_batch(
    project: str, body: FeedbackBatch, store: StoreDep, settings: SettingsDep, request: Request
) -> BatchAck:
    """Store up to 10,000 events: all of them, or (422, with the invalid rows) none."""
    check_batch_size(len(body.events), settings)
    stored = store_feedback(store, project, body.events, late_interactions_wait=_late(request))
    feedback_changed(request.app, project)
    created = sum(s.created for s in stored)
    return BatchAck(ids=[s.id for s in stored], created=created, duplicates=len(stored) - created)


def _late(request: Request) -> float:
    """How long an interaction journaled by another server may take to be visible here."""
    settings = request.app.state.settings
    return 4 * settings.interaction_flush_seconds + 0.2 if settings.interaction_journal else 0.0


@router.get("", dependencies=[Admin])
def list_page(
    project: str,
    store: StoreDep,
    kind: FeedbackKind | None = None,
    user_id: str | None = None,
    interaction_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    min_reward: Annotated[float | None, Query(ge=-1, le=1)] = None,
    max_reward: Annotated[float | None, Query(ge=-1, le=1)] = None,
    trainable: bool | None = None,
    after: Annotated[
        int, Query(ge=0, le=INT64_MAX, description="Cursor: the next_cursor of a page.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> FeedbackPage:
    where = FeedbackFilter(
        kind=kind,
        user_id=user_id,
        interaction_id=interaction_id,
        since=_utc(since),
        until=_utc(until),
        min_reward=min_reward,
        max_reward=max_reward,
        trainable=trainable,
    )
    with store.read() as session:
        found = get_project(session, project)
        rows, cursor = page(session, found.id, policy_of(found), where, after=after, limit=limit)
    return FeedbackPage(items=rows, next_cursor=cursor)


@router.get("/{feedback_id}", dependencies=[Admin])
def show(
    project: str, feedback_id: Annotated[int, Path(ge=1, le=INT64_MAX)], store: StoreDep
) -> FeedbackPublic:
    with store.read() as session:
        found = get_project(session, project)
        row = session.scalar(
            select(Feedback).where(Feedback.project_id == found.id, Feedback.id == feedback_id)
        )
        if row is None:
            raise NotFound(f"no feedback {feedback_id} in project {project!r}")
        return feedback_public(row, policy_of(found), datetime.now(UTC))


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
