"""Reading feedback back: filtered pages, and the rows as users see them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from fineloop.feedback.rewards import RewardPolicy, effective_reward, usable_for_training
from fineloop.schemas import FeedbackPublic
from fineloop.store.schema import Feedback


@dataclass(frozen=True)
class FeedbackFilter:
    kind: str | None = None
    user_id: str | None = None
    interaction_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_reward: float | None = None
    max_reward: float | None = None
    trainable: bool | None = None


def filtered(project_id: int, where: FeedbackFilter) -> Select[Feedback]:
    query = select(Feedback).where(Feedback.project_id == project_id)
    if where.kind is not None:
        query = query.where(Feedback.kind == where.kind)
    if where.user_id is not None:
        query = query.where(Feedback.user_id == where.user_id)
    if where.interaction_id is not None:
        query = query.where(Feedback.interaction_id == where.interaction_id)
    if where.since is not None:
        query = query.where(Feedback.timestamp >= where.since)
    if where.until is not None:
        query = query.where(Feedback.timestamp < where.until)
    if where.min_reward is not None:
        query = query.where(Feedback.reward >= where.min_reward)
    if where.max_reward is not None:
        query = query.where(Feedback.reward <= where.max_reward)
    return query


def page(
    session: Session,
    project_id: int,
    policy: RewardPolicy,
    where: FeedbackFilter,
    *,
    after: int = 0,
    limit: int = 100,
) -> tuple[list[FeedbackPublic], int | None]:
    """One page in id order; the cursor is the last id seen (None at the end)."""
    now = datetime.now(UTC)
    query = filtered(project_id, where).where(Feedback.id > after).order_by(Feedback.id)
    found: list[FeedbackPublic] = []
    last_id = after
    # `trainable` depends on decay as of now, so it is filtered here rather than in SQL.
    while True:
        rows = list(session.scalars(query.where(Feedback.id > last_id).limit(limit)))
        for index, row in enumerate(rows):
            last_id = row.id
            public = feedback_public(row, policy, now)
            if where.trainable is None or public.trainable == where.trainable:
                found.append(public)
                if len(found) == limit:
                    # Rows after this one in a short fetch are unseen: the page is not the last.
                    at_end = len(rows) < limit and index == len(rows) - 1
                    return found, None if at_end else last_id
        if len(rows) < limit:
            return found, None


def feedback_public(row: Feedback, policy: RewardPolicy, now: datetime) -> FeedbackPublic:
    effective = effective_reward(policy, row.reward, row.timestamp, now)
    return FeedbackPublic(
        id=row.id,
        kind=row.kind,
        interaction_id=row.interaction_id,
        input=row.input,
        user_id=row.user_id,
        timestamp=row.timestamp,
        received_at=row.received_at,
        idempotency_key=row.idempotency_key,
        difficulty=row.difficulty,
        payload=row.payload,
        metadata=row.feedback_metadata,
        reward=row.reward,
        effective_reward=effective,
        trainable=usable_for_training(policy, effective),
    )
