"""The review queue: interactions without feedback, the most useful to review first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fineloop.api.deps import Admin, StoreDep
from fineloop.api.responses import KEYED
from fineloop.feedback.review import MAX_LIMIT, ReviewPage, review_queue
from fineloop.policies import ReviewRanking

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
