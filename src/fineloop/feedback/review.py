"""The review queue: served interactions nobody gave feedback on yet, the ones whose review
teaches the model most first (active learning).

The newest `ReviewPolicy.scan` interactions without feedback are ranked by the policy's
`ranking` (or the caller's):

- `uncertainty`: the family's `review_score` of what was shown (embedding: a top item's
  calibrated probability nearest the select threshold; NER: the least confident span),
  highest first;
- `disagreement`: interactions whose input another version answered differently (the
  family's `review_answer`: embedding compares the top-1 item) first, then by uncertainty.
  The other answers are what was stored: another interaction with the same input (a
  rollout served it from two versions), and the newest candidate's answers, which its
  training job records when the queue is ranked this way (jobs/review_answers.py); no
  model runs here;
- `random`: a fixed shuffle (a hash of the id, so pages stay stable);
- `recent`: newest first.

Interactions without a score go after those with one, newest first. This module knows no
family: everything family-specific comes through `Task`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from fineloop.feedback.review_rewrite import ReviewEditPublic, edit_public
from fineloop.policies import ReviewRanking, ServingPolicy
from fineloop.schemas import InteractionPublic
from fineloop.store.interactions import interaction_public
from fineloop.store.projects import get_project, review_policy_of, serving_policy_of
from fineloop.store.schema import Feedback, Interaction, ReviewAnswer
from fineloop.tasks import get_task

if TYPE_CHECKING:
    from fineloop.tasks.base import Task

MAX_LIMIT = 500
Reason = Literal["uncertainty", "disagreement", "random", "recent"]


class ReviewItem(BaseModel):
    interaction: InteractionPublic
    score: float | None = Field(
        description="The family's uncertainty for what was shown (higher: review sooner); "
        "null when the output tells nothing."
    )
    reason: Reason = Field(description="What put the interaction at this place.")
    disagrees_with: list[str] = Field(
        description="Versions that answered the same input differently."
    )
    edit: ReviewEditPublic | None = Field(
        description="How a reviewer may rewrite the output (POST .../review/{interaction_id} "
        "with the text); null when it cannot be rewritten."
    )


class ReviewPage(BaseModel):
    project: str
    task: str
    ranking: ReviewRanking
    items: list[ReviewItem]
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null at the end.")
    ranked: int = Field(description="Interactions without feedback that were ranked.")
    more: bool = Field(
        description="True when more interactions without feedback exist than the policy's "
        "`scan` ranks: older ones come once these are reviewed."
    )


def review_queue(
    session: Session,
    project_name: str,
    *,
    ranking: ReviewRanking | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> ReviewPage:
    """One page of the project's review queue."""
    project = get_project(session, project_name)
    policy = review_policy_of(project)
    chosen: ReviewRanking = ranking or policy.ranking
    size = min(limit or policy.limit, MAX_LIMIT)
    rows = unreviewed(session, project.id, policy.scan + 1)
    more = len(rows) > policy.scan
    rows = rows[: policy.scan]
    task = get_task(project.task)
    scores: dict[str, float | None] = {}
    options = dict(project.task_options or {})
    if chosen in ("uncertainty", "disagreement"):
        serving = serving_policy_of(project)
        scores = {r.id: _score(task, options, r, serving) for r in rows}
    others: dict[str, list[str]] = {}
    if chosen == "disagreement":
        others = _disagreements(session, project.id, task, rows, policy.scan)
    ordered = sorted(rows, key=_order(chosen, scores, others))
    page = ordered[offset : offset + size]
    items = [
        ReviewItem(
            interaction=interaction_public(row),
            score=scores.get(row.id),
            reason=_reason(chosen, scores.get(row.id), bool(others.get(row.id))),
            disagrees_with=others.get(row.id, []),
            edit=edit_public(task.review_edit(options, (row.input, row.output))),
        )
        for row in page
    ]
    end = offset + len(page)
    return ReviewPage(
        project=project.name,
        task=project.task,
        ranking=chosen,
        items=items,
        offset=offset,
        next_offset=end if end < len(ordered) else None,
        ranked=len(ordered),
        more=more,
    )


def unreviewed(session: Session, project_id: int, limit: int) -> list[Interaction]:
    """The newest `limit` interactions nobody gave feedback on, newest first."""
    reviewed = exists().where(
        Feedback.project_id == Interaction.project_id, Feedback.interaction_id == Interaction.id
    )
    query = (
        select(Interaction)
        .where(Interaction.project_id == project_id, ~reviewed)
        .order_by(Interaction.created_at.desc(), Interaction.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def _score(
    task: Task, options: dict[str, Any], row: Interaction, serving: ServingPolicy
) -> float | None:
    """The family's score; a non-finite one (NaN would scramble the sort) counts as none."""
    score = task.review_score(options, (row.input, row.output), serving)
    return float(score) if score is not None and math.isfinite(score) else None


def _order(
    ranking: ReviewRanking, scores: dict[str, float | None], others: dict[str, list[str]]
) -> Any:
    """The sort key of a row under `ranking` (ties: newest first, then by id)."""

    def newest(row: Interaction) -> tuple[float, str]:
        return (-_timestamp(row.created_at), row.id)

    if ranking == "recent":
        return newest
    if ranking == "random":
        return lambda row: (hashlib.sha256(row.id.encode()).hexdigest(), row.id)

    def uncertain(row: Interaction) -> tuple[Any, ...]:
        score = scores.get(row.id)
        disagreeing = 0 if others.get(row.id) else 1
        return (disagreeing, score is None, -(score or 0.0), *newest(row))

    return uncertain


def _reason(ranking: ReviewRanking, score: float | None, disagrees: bool) -> Reason:
    if ranking in ("random", "recent"):
        return ranking
    if disagrees:
        return "disagreement"
    return "uncertainty" if score is not None else "recent"


def _disagreements(
    session: Session, project_id: int, task: Task, queued: list[Interaction], scan: int
) -> dict[str, list[str]]:
    """For each queued interaction, the other versions whose answer to the same input
    differs, among the queued ones and the newest `scan` interactions (reviewed or not)."""
    recent = session.scalars(
        select(Interaction)
        .where(Interaction.project_id == project_id, Interaction.model_version.is_not(None))
        .order_by(Interaction.created_at.desc(), Interaction.id)
        .limit(scan)
    )
    answers: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    inputs = {row.id: _canonical(row.input) for row in queued}
    recorded = session.execute(
        select(ReviewAnswer.interaction_id, ReviewAnswer.version, ReviewAnswer.answer).where(
            ReviewAnswer.project_id == project_id
        )
    )
    for interaction_id, version, answer in recorded:  # the newest candidate's, if recorded
        if interaction_id in inputs and answer is not None:
            answers[inputs[interaction_id]][version].add(_canonical(answer))
    mine: dict[str, tuple[str, str, str]] = {}
    for row in [*queued, *recent]:
        if row.model_version is None:
            continue
        answer = task.review_answer(row.output)
        if answer is None:
            continue
        key, said = _canonical(row.input), _canonical(answer)
        answers[key][row.model_version].add(said)
        mine.setdefault(row.id, (key, row.model_version, said))
    found: dict[str, list[str]] = {}
    for row in queued:
        if row.id not in mine:
            continue
        key, version, said = mine[row.id]
        differ = [
            v for v, said_there in answers[key].items() if v != version and said_there - {said}
        ]
        if differ:
            found[row.id] = sorted(differ)
    return found


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _timestamp(moment: datetime) -> float:
    return moment.timestamp()
