"""The project page of a generation project: recent interactions, each with the feedback on
it, and the newest version's replies next to the base's and champion's.

Bounded everywhere: a page of PAGE interactions, at most FEEDBACK events each, texts cut at
TEXT_CHARS; the template escapes every text, so what users wrote stays text.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from fineloop.registry import manage
from fineloop.store.interactions import existing_interactions
from fineloop.store.schema import Interaction, Project
from fineloop.tasks.generation.prompts import output_text, prompt_messages
from fineloop.tasks.generation.web.textdiff import word_diff
from fineloop.web.interactions import (
    FEEDBACK,
    PAGE,
    as_text,
    clip,
    event_row,
    feedback_counts,
    feedback_on,
    interaction_page,
)

__all__ = ["PAGE", "project_panel", "sample_row"]

SIDES = ("chosen", "rejected")


def project_panel(session: Session, project: Project, page: int) -> dict[str, Any]:
    shown_page = interaction_page(session, project, page)
    rows = shown_page.rows
    ids = [row.id for row in rows]
    found, counts = feedback_on(session, project, ids), feedback_counts(session, project, ids)
    replies = other_replies(session, project, found)
    replies |= {row.id: output_text(row.output) for row in rows}
    return {
        "interactions": [
            interaction_row(row, found.get(row.id, []), counts.get(row.id, 0), replies)
            for row in rows
        ],
        "page": shown_page.page,
        "pages": shown_page.pages,
        "total": shown_page.total,
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


def shown(
    event: Any, reply: str, replies: dict[str, str | None], interaction: str
) -> dict[str, Any]:
    """One feedback event as the page shows it: its kind's fields, a correction as a diff
    against the reply, a preference with both sides' texts and the side this reply was on."""
    payload = event.payload
    row = event_row(event)
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
