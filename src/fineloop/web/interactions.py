"""A page of a project's interactions and the feedback on each: what a family's project
panel lists (generation: prompts and replies; NER: texts and spans).

Bounded everywhere: a page holds at most `size` interactions, deeper pages than MAX_PAGE
are for the API (GET /v1/projects/{p}/interactions), and each interaction brings its
newest FEEDBACK events. Texts are cut at TEXT_CHARS; templates escape them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fineloop.feedback.query import feedback_public
from fineloop.store.projects import policy_of
from fineloop.store.schema import Feedback, Interaction, Project

PAGE = 20  # interactions per page
MAX_PAGE = 500
FEEDBACK = 10  # events shown per interaction, the newest
PREFERENCES = 200  # recent preferences scanned for ones naming a shown interaction
TEXT_CHARS = 4000


@dataclass(frozen=True)
class InteractionPage:
    rows: list[Interaction]
    page: int  # the page shown (a page past the end shows the last)
    pages: int
    total: int


def interaction_page(
    session: Session, project: Project, page: int, size: int = PAGE
) -> InteractionPage:
    """The project's interactions, newest first, page `page` of `size`."""
    total = session.scalar(
        select(func.count()).select_from(Interaction).where(Interaction.project_id == project.id)
    )
    pages = max(1, -(-(total or 0) // size))
    page = min(max(page, 1), pages, MAX_PAGE)
    rows = session.scalars(
        select(Interaction)
        .where(Interaction.project_id == project.id)
        .order_by(Interaction.created_at.desc(), Interaction.id)
        .offset((page - 1) * size)
        .limit(size)
    ).all()
    return InteractionPage(list(rows), page, min(pages, MAX_PAGE), total or 0)


def feedback_on(session: Session, project: Project, ids: list[str]) -> dict[str, list[Any]]:
    """Feedback events about each interaction, newest first: those logged on it, and
    recent preferences naming it as the chosen or rejected side."""
    if not ids:
        return {}
    policy, now = policy_of(project), datetime.now(UTC)
    found: dict[str, list[Any]] = {i: [] for i in ids}
    direct = session.scalars(
        select(Feedback)
        .where(Feedback.project_id == project.id, Feedback.interaction_id.in_(ids))
        .order_by(Feedback.id.desc())
        .limit(len(ids) * FEEDBACK * 5)
    ).all()
    preferences = session.scalars(
        select(Feedback)
        .where(Feedback.project_id == project.id, Feedback.kind == "preference")
        .order_by(Feedback.id.desc())
        .limit(PREFERENCES)
    ).all()
    seen: set[int] = set()
    for row in [*direct, *preferences]:
        if row.id in seen:
            continue
        seen.add(row.id)
        sides = (row.payload.get(f"{side}_interaction_id") for side in ("chosen", "rejected"))
        public = feedback_public(row, policy, now)
        named = {row.interaction_id, *sides}
        for interaction in [i for i in named if isinstance(i, str) and i in found]:
            found[interaction].append(public)
    for events in found.values():
        events.sort(key=lambda event: event.id, reverse=True)
    return found


def feedback_counts(session: Session, project: Project, ids: list[str]) -> dict[str, int]:
    """How many events were logged on each interaction (the page shows the newest few)."""
    rows = session.execute(
        select(Feedback.interaction_id, func.count())
        .where(Feedback.project_id == project.id, Feedback.interaction_id.in_(ids))
        .group_by(Feedback.interaction_id)
    )
    return {row[0]: row[1] for row in rows if row[0] is not None}


def event_row(event: Any) -> dict[str, Any]:
    """The fields every family shows of a feedback event; the family adds its kind's own."""
    return {
        "id": event.id,
        "kind": event.kind,
        "at": event.timestamp.isoformat(),
        "user_id": event.user_id,
        "reward": event.effective_reward,
        "value": event.payload.get("value"),
    }


def as_text(value: Any) -> str:
    """Any JSON value as text, for shapes the page has no better view of."""
    return clip(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))


def clip(text: str) -> str:
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + " …"
