"""The project page of a NER project: recent texts with the spans shown for them (a colour
per type), each with the labels and corrections given on it as a change of the span set,
and the newest run's entity scores per type, base / champion / candidate.

Bounded like generation's: a page of PAGE interactions, FEEDBACK events each, texts cut.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from fineloop.registry import manage
from fineloop.store.schema import Interaction, Project
from fineloop.tasks.ner.spans import Span, corrected_spans, spans_of, text_of
from fineloop.tasks.ner.web.highlight import changes, colours, entity_types, legend, segments
from fineloop.tasks.ner.web.scores import score_table
from fineloop.web.interactions import (
    FEEDBACK,
    as_text,
    event_row,
    feedback_counts,
    feedback_on,
    interaction_page,
)

ANSWERS = ("correction", "label")  # the kinds that say which spans are right


def project_panel(session: Session, project: Project, page: int) -> dict[str, Any]:
    types = entity_types(project.task_options)
    palette = colours(types)
    shown = interaction_page(session, project, page)
    ids = [row.id for row in shown.rows]
    found, counts = feedback_on(session, project, ids), feedback_counts(session, project, ids)
    return {
        "legend": legend(palette),
        "interactions": [
            interaction_row(row, found.get(row.id, []), counts.get(row.id, 0), palette)
            for row in shown.rows
        ],
        "page": shown.page,
        "pages": shown.pages,
        "total": shown.total,
        "scores": newest_scores(session, project, types, palette),
    }


def interaction_row(
    row: Interaction, feedback: list[Any], logged: int, palette: Mapping[str, str]
) -> dict[str, Any]:
    """One text with its shown spans; `logged` events were stored on it, `feedback` holds
    the newest."""
    text, spans = text_of(row.input), spans_of(row.output)
    return {
        "id": row.id,
        "created_at": row.created_at.isoformat(),
        "version": row.model_version,
        "variant": row.variant,
        "user_id": row.user_id,
        "segments": None if text is None else segments(text, spans, palette),
        "raw_input": as_text(row.input) if text is None else None,
        "spans": len(spans),
        "feedback": [event_view(event, text, row.output, palette) for event in feedback[:FEEDBACK]],
        "more_feedback": max(0, len(feedback) - FEEDBACK, logged - FEEDBACK),
    }


def event_view(
    event: Any, text: str | None, output: Any, palette: Mapping[str, str]
) -> dict[str, Any]:
    """A feedback event as the page shows it; a label or correction as the span set it
    makes right, and what changed against the spans shown."""
    row = event_row(event)
    if event.kind not in ANSWERS or text is None:
        return row
    payload = event.payload
    try:
        if event.kind == "correction":
            right = corrected_spans(output, payload.get("output"))
        elif payload.get("spans") is not None:
            right = spans_of(payload)
        else:
            return row  # a label without spans (another family's shape)
    except ValueError as error:
        return row | {"problem": str(error)}
    shown: list[Span] = spans_of(output)
    return row | {
        "segments": segments(text, right, palette),
        "changes": changes(text, shown, right),
    }


def newest_scores(
    session: Session, project: Project, types: list[str], palette: Mapping[str, str]
) -> dict[str, Any] | None:
    """The per-type table of the newest version a training run evaluated."""
    for version in reversed(manage.versions_public(session, project)):
        table = score_table(version["metrics"], types, palette, f"{version['version']} (candidate)")
        if table is not None:
            return table | {"version": version["version"]}
    return None
