"""The project page of a generation project: recent interactions, each with the feedback on
it, and the newest version's replies next to the base's and champion's.

Bounded everywhere: a page of PAGE interactions, at most FEEDBACK events each, texts cut at
TEXT_CHARS; the template escapes every text, so what users wrote stays text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fineloop.feedback.query import feedback_public
from fineloop.registry import manage
from fineloop.store.interactions import existing_interactions
from fineloop.store.projects import policy_of
from fineloop.store.schema import Feedback, Interaction, Project
from fineloop.tasks.generation.prompts import output_text, prompt_messages
from fineloop.web.textdiff import word_diff

PAGE = 20  # interactions per page
MAX_PAGE = 500  # deeper pages are for the API (GET /v1/projects/{p}/interactions)
FEEDBACK = 10  # events shown per interaction, the newest
PREFERENCES = 200  # recent preferences scanned for ones naming a shown interaction
TEXT_CHARS = 4000
SIDES = ("chosen", "rejected")


def project_panel(session: Session, project: Project, page: int) -> dict[str, Any]:
    total = session.scalar(
        select(func.count()).select_from(Interaction).where(Interaction.project_id == project.id)
    )
    pages = max(1, -(-(total or 0) // PAGE))
    page = min(max(page, 1), pages, MAX_PAGE)
    rows = session.scalars(
        select(Interaction)
        .where(Interaction.project_id == project.id)
        .order_by(Interaction.created_at.desc(), Interaction.id)
        .offset((page - 1) * PAGE)
        .limit(PAGE)
    ).all()
    ids = [row.id for row in rows]
    found, counts = feedback_on(session, project, ids), feedback_counts(session, project, ids)
    replies = other_replies(session, project, found)
    replies |= {row.id: output_text(row.output) for row in rows}
    return {
        "interactions": [
            interaction_row(row, found.get(row.id, []), counts.get(row.id, 0), replies)
            for row in rows
        ],
        "page": page,
        "pages": min(pages, MAX_PAGE),
        "total": total or 0,
        "samples": newest_samples(session, project),
    }


def other_replies(
    session: Session, project: Project, found: dict[str, list[Any]]
) -> dict[str, str | None]:
    """The replies of interactions a shown preference names beyond this page's."""
    named = {
        event.payload.get(f"{side}_interaction_id")
        for events in found.values()
        for event in events
        if event.kind == "preference"
        for side in ("chosen", "rejected")
    }
    wanted = [i for i in named if isinstance(i, str) and i not in found]
    outputs = existing_interactions(session, project.id, wanted) if wanted else {}
    return {key: output_text(value) for key, value in outputs.items()}


def interaction_row(
    row: Interaction, feedback: list[Any], logged: int, replies: dict[str, str | None]
) -> dict[str, Any]:
    """`logged`: events stored on the interaction, of which `feedback` holds the newest;
    `replies`: the texts of interactions a preference may name."""
    reply = output_text(row.output)
    shown_reply = clip(reply) if reply is not None else as_text(row.output)
    return {
        "id": row.id,
        "created_at": row.created_at.isoformat(),
        "version": row.model_version,
        "variant": row.variant,
        "user_id": row.user_id,
        "turns": [m | {"content": clip(m["content"])} for m in prompt_messages(row.input) or []],
        "raw_input": None if prompt_messages(row.input) else as_text(row.input),
        "reply": shown_reply,
        "feedback": [shown(event, reply or "", replies, row.id) for event in feedback[:FEEDBACK]],
        "more_feedback": max(0, len(feedback) - FEEDBACK, logged - FEEDBACK),
    }


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


def shown(
    event: Any, reply: str, replies: dict[str, str | None], interaction: str
) -> dict[str, Any]:
    """One feedback event as the page shows it: its kind's fields, a correction as a diff
    against the reply, a preference with both sides' texts and the side this reply was on."""
    payload = event.payload
    row: dict[str, Any] = {
        "id": event.id,
        "kind": event.kind,
        "at": event.timestamp.isoformat(),
        "user_id": event.user_id,
        "reward": event.effective_reward,
        "value": payload.get("value"),
    }
    if event.kind == "correction":
        corrected = output_text(payload.get("output"))
        text = corrected if corrected is not None else as_text(payload.get("output"))
        row["corrected"] = clip(text)
        row["diff"] = word_diff(reply, text)
    elif event.kind == "preference":
        row["chosen"] = side_text(payload, "chosen", replies)
        row["rejected"] = side_text(payload, "rejected", replies)
        ours = [s for s in SIDES if payload.get(f"{s}_interaction_id") == interaction]
        row["side"] = ours[0] if ours else None
    return row


def side_text(payload: dict[str, Any], side: str, replies: dict[str, str | None]) -> str:
    """A preference's side: its inline text, or the reply of the interaction it names."""
    other = payload.get(f"{side}_interaction_id")
    if isinstance(other, str):
        text = replies.get(other)
        return clip(text) if text is not None else f"(the reply of interaction {other})"
    text = output_text(payload.get(side))
    return clip(text if text is not None else as_text(payload.get(side)))


def newest_samples(session: Session, project: Project) -> dict[str, Any] | None:
    """The newest version that kept held-out samples, with them side by side."""
    for version in reversed(manage.versions_public(session, project)):
        metrics = version["metrics"]
        samples = metrics.get("samples") if isinstance(metrics, dict) else None
        if isinstance(samples, list) and samples:
            return {
                "version": version["version"],
                "champion_version": metrics.get("champion_version"),
                "base_version": metrics.get("base_version"),
                "rows": [sample_row(s) for s in samples if isinstance(s, dict)],
            }
    return None


def sample_row(sample: dict[str, Any]) -> dict[str, Any]:
    outputs = sample.get("outputs") if isinstance(sample.get("outputs"), dict) else {}
    assert isinstance(outputs, dict)
    turns = prompt_messages(sample.get("input")) or []
    return {
        "turns": [m | {"content": clip(m["content"])} for m in turns],
        "raw_input": None if turns else as_text(sample.get("input")),
        "reference": shown_text(sample.get("reference")),
        "base": shown_text(outputs.get("base")),
        "champion": shown_text(outputs.get("champion")),
        "candidate": shown_text(outputs.get("candidate")),
    }


def shown_text(value: Any) -> str | None:
    if value is None:
        return None
    text = output_text(value)
    return clip(text if text is not None else as_text(value))


def as_text(value: Any) -> str:
    """Any JSON value as text, for shapes the page has no better view of."""
    return clip(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))


def clip(text: str) -> str:
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + " …"
