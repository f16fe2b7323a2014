"""A reviewer's rewrite of one interaction, made an ordinary feedback event.

The family reads the text (`Task.review_event`: a reply as it should have been, NER lines
of spans, the right item ids); the loop adds the interaction, the idempotency key, the
user and `metadata.source = "review"`, and the event then goes through the same checks and
store as POST .../feedback. What the family may rewrite, and how, travels with each queued
interaction (`ReviewItem.edit`), so a page or script never guesses a family's format.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from fineloop.errors import Invalid, NotFound, error_message, field_path
from fineloop.feedback.events import EventEnvelope, FeedbackEvent
from fineloop.schemas import Strict
from fineloop.store.projects import get_project
from fineloop.store.schema import Interaction, Item
from fineloop.tasks import get_task
from fineloop.tasks.base import ReviewEdit
from fineloop.validation import JsonObject

MAX_TEXT = 100_000
_EVENT = TypeAdapter[EventEnvelope](FeedbackEvent)


class ReviewEditPublic(BaseModel):
    action: str = Field(description='What the page\'s button says: "edit" or "label".')
    text: str = Field(description="What to start from: the output as people write it.")
    hint: str = Field(description="How to write the text.")


class ReviewRewrite(Strict):
    text: str = Field(
        max_length=MAX_TEXT,
        description="The rewritten text, in the format the queue item's `edit.hint` gives.",
    )
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Retries with the same key store nothing new.",
    )
    user_id: str | None = Field(default=None, max_length=256, description="Who reviewed it.")
    metadata: JsonObject = Field(default_factory=dict, description="Kept with the event.")


def edit_public(edit: ReviewEdit | None) -> ReviewEditPublic | None:
    if edit is None:
        return None
    return ReviewEditPublic(action=edit.action, text=edit.text, hint=edit.hint)


def rewrite_event(
    session: Session, project_name: str, interaction_id: str, rewrite: ReviewRewrite
) -> EventEnvelope:
    """The feedback event a reviewer's rewrite makes; NotFound for an unknown interaction,
    Invalid saying what to fix for a text the family cannot read."""
    project = get_project(session, project_name)
    row = session.get(Interaction, (project.id, interaction_id))
    if row is None:
        raise NotFound(f"no interaction {interaction_id!r} in project {project_name!r}")
    task, options = get_task(project.task), dict(project.task_options or {})
    shown = (row.input, row.output)
    if task.review_edit(options, shown) is None:
        raise Invalid(
            "this interaction's output cannot be rewritten: answer it with a thumb or a pick",
            field="text",
        )
    fields = task.review_event(options, shown, rewrite.text)
    metadata = rewrite.metadata | {"source": "review"}
    envelope: dict[str, Any] = {"interaction_id": interaction_id, "metadata": metadata}
    if rewrite.idempotency_key is not None:
        envelope["idempotency_key"] = rewrite.idempotency_key
    if rewrite.user_id is not None:
        envelope["user_id"] = rewrite.user_id
    try:
        event = _EVENT.validate_python(fields | envelope)
    except ValidationError as error:
        first = error.errors()[0]
        raise Invalid(
            f"{field_path(first['loc'], first['type'])}: {error_message(first)}", field="text"
        ) from None
    _check_items(session, project.id, fields.get("items"))
    return event


def _check_items(session: Session, project_id: int, named: Any) -> None:
    """Item ids a label names must be in the catalog: a mistyped id would teach nothing."""
    if not isinstance(named, list) or not named:
        return
    known = set(
        session.scalars(
            select(Item.item_id).where(Item.project_id == project_id, Item.item_id.in_(named))
        )
    )
    missing = [i for i in named if i not in known]
    if missing:
        raise Invalid(f"not in the catalog: {', '.join(map(repr, missing[:5]))}", field="text")
