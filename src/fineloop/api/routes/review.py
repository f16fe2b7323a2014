"""The review queue: interactions without feedback, the most useful to review first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status

from fineloop.api.deps import Admin, StoreDep
from fineloop.api.responses import CHANGE, KEYED
from fineloop.feedback.review import MAX_LIMIT, ReviewPage, review_queue
from fineloop.feedback.review_rewrite import ReviewRewrite, rewrite_event
from fineloop.operations import store_feedback
from fineloop.policies import ReviewRanking
from fineloop.schemas import FeedbackAck
from fineloop.serving import feedback_changed

router = APIRouter(
    prefix="/v1/projects/{project}/review", tags=["review"], dependencies=[Admin], responses=KEYED
)


@router.get("")
def queue(
    project: str,
    store: StoreDep,
    ranking: Annotated[
        ReviewRanking | None,
        Query(description="Overrides the project's review_policy.ranking for this call."),
    ] = None,
    limit: Annotated[
        int | None,
        Query(ge=1, le=MAX_LIMIT, description="Page size; default review_policy.limit."),
    ] = None,
    offset: Annotated[
        int, Query(ge=0, le=50_000, description="Cursor: the next_offset of a page.")
    ] = 0,
) -> ReviewPage:
    """Interactions nobody gave feedback on yet, ranked by the project's review policy
    (uncertainty, disagreement between versions, random or recent). Send ordinary feedback
    on an interaction (POST .../feedback with its interaction_id) and it leaves the queue."""
    with store.read() as session:
        return review_queue(session, project, ranking=ranking, limit=limit, offset=offset)


@router.post(
    "/{interaction_id:path}",  # ids may hold "/": the rest of the path
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": FeedbackAck, "description": "Its idempotency key was seen: not stored."},
        **CHANGE,
    },
)
def rewrite(
    project: str,
    interaction_id: Annotated[str, Path(min_length=1, max_length=64)],
    body: ReviewRewrite,
    store: StoreDep,
    response: Response,
    request: Request,
) -> FeedbackAck:
    """Answer a queued interaction with rewritten text, in the format its queue item's
    `edit.hint` gives (a reply as it should have been, NER spans as lines, the right item
    ids): stored as the ordinary feedback event it makes (a correction or a label)."""
    with store.read() as session:
        event = rewrite_event(session, project, interaction_id, body)
    stored = store_feedback(store, project, [event])[0]
    feedback_changed(request.app, project)
    if not stored.created:
        response.status_code = status.HTTP_200_OK
    return FeedbackAck(id=stored.id, created=stored.created, reward=stored.reward)
