"""Feedback events as users send them: one envelope, six kinds, told apart by `kind`."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from fineloop.validation import INPUT, Int64, Json, JsonObject, Timestamp

FeedbackKind = Literal["thumb", "rating", "correction", "selection", "preference", "label"]
KINDS: tuple[str, ...] = ("thumb", "rating", "correction", "selection", "preference", "label")

Id = Annotated[str, Field(min_length=1, max_length=256)]


class EventEnvelope(BaseModel):
    """Fields every feedback event shares, whatever its kind."""

    model_config = INPUT

    interaction_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="The interaction (model call) this feedback is about.",
    )
    input: Json | None = Field(
        default=None,
        description="The model input, for feedback logged without an interaction "
        "(a query for a label, a prompt for a preference).",
    )
    user_id: str | None = Field(default=None, max_length=256, description="Who gave it.")
    timestamp: Timestamp | None = Field(
        default=None, description="When the user gave it (ISO 8601; default: now, UTC)."
    )
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Retries with the same key store nothing new and return the first id.",
    )
    difficulty: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="How hard the case was for the model (0 easy, 1 hard); derived from "
        "the interaction's ranking for selections when omitted.",
    )
    metadata: JsonObject = Field(
        default_factory=dict, description="Free-form context kept with the event."
    )


class ThumbEvent(EventEnvelope):
    kind: Literal["thumb"] = Field(description="Thumbs up or down on the output.")
    value: Literal["up", "down"] = Field(description="up or down.")


class RatingEvent(EventEnvelope):
    kind: Literal["rating"] = Field(description="A score on the project's rating scale.")
    value: float = Field(description="The score; must lie on the project's rating_scale.")


class CorrectionEvent(EventEnvelope):
    kind: Literal["correction"] = Field(description="The user's corrected output.")
    output: Json = Field(description="What the output should have been.")

    @field_validator("output")
    @classmethod
    def _not_empty(cls, value: Json) -> Json:
        if value is None or value == "" or value == [] or value == {}:
            raise ValueError("a correction needs the corrected output")
        return value


class SelectionEvent(EventEnvelope):
    kind: Literal["selection"] = Field(description="Which shown candidates were picked.")
    selected: list[Id] = Field(default_factory=list, description="Item ids the user picked.")
    rejected: list[Id] = Field(
        default_factory=list, description="Item ids the user explicitly rejected."
    )

    @model_validator(mode="after")
    def _consistent(self) -> SelectionEvent:
        if not self.selected and not self.rejected:
            raise ValueError("a selection needs at least one selected or rejected item id")
        both = set(self.selected) & set(self.rejected)
        if both:
            raise ValueError(f"items both selected and rejected: {sorted(both)[:5]}")
        return self


class PreferenceEvent(EventEnvelope):
    kind: Literal["preference"] = Field(description="Output A preferred over output B.")
    chosen: Json | None = Field(default=None, description="The preferred output.")
    rejected: Json | None = Field(default=None, description="The dispreferred output.")
    chosen_interaction_id: str | None = Field(
        default=None, max_length=64, description="Interaction holding the preferred output."
    )
    rejected_interaction_id: str | None = Field(
        default=None, max_length=64, description="Interaction holding the dispreferred output."
    )

    @model_validator(mode="after")
    def _one_per_side(self) -> PreferenceEvent:
        for side in ("chosen", "rejected"):
            given = [getattr(self, side) is not None, getattr(self, f"{side}_interaction_id")]
            if sum(bool(g) for g in given) != 1:
                raise ValueError(f"give exactly one of {side} or {side}_interaction_id")
        same_output = self.chosen is not None and self.chosen == self.rejected
        same_call = self.chosen_interaction_id is not None and (
            self.chosen_interaction_id == self.rejected_interaction_id
        )
        if same_output or same_call:
            raise ValueError("chosen and rejected are the same: a preference needs two outputs")
        return self


class Span(BaseModel):
    model_config = INPUT

    start: Int64 = Field(ge=0, description="Character offset where the span starts.")
    end: Int64 = Field(gt=0, description="Character offset just past the span.")
    label: str = Field(min_length=1, max_length=64, description="Entity type.")

    @model_validator(mode="after")
    def _ordered(self) -> Span:
        if self.end <= self.start:
            raise ValueError("span end must be greater than start")
        return self


class LabelEvent(EventEnvelope):
    kind: Literal["label"] = Field(description="Ground truth: a label, spans or right items.")
    label: str | None = Field(default=None, max_length=256, description="A class label.")
    spans: list[Span] | None = Field(default=None, description="Entity spans in the input.")
    items: list[Id] | None = Field(default=None, description="The right item ids for the input.")

    @model_validator(mode="after")
    def _something(self) -> LabelEvent:
        # `spans=[]` is an answer (NER: the text has no entity), so only None is missing.
        if self.label is None and self.spans is None and not self.items:
            raise ValueError("a label needs one of label, spans or items")
        return self


FeedbackEvent = Annotated[
    ThumbEvent | RatingEvent | CorrectionEvent | SelectionEvent | PreferenceEvent | LabelEvent,
    Field(discriminator="kind"),
]

_ENVELOPE_FIELDS = frozenset(EventEnvelope.model_fields) | {"kind"}


@cache
def _payload_fields(kind: type[EventEnvelope]) -> frozenset[str]:
    return frozenset(kind.model_fields) - _ENVELOPE_FIELDS


def payload_of(event: EventEnvelope) -> dict[str, Any]:
    """The kind-specific part of an event, as stored in the `payload` column."""
    fields = _payload_fields(type(event))
    return event.model_dump(mode="json", include=set(fields), exclude_none=True)
