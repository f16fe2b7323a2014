"""Request and response shapes of search, select and calibration."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fineloop.schemas import Strict
from fineloop.validation import JsonObject

Filters = JsonObject  # 64-bit integers, no NaN, bounded nesting: what the index can key


class SearchRequest(Strict):
    query: str = Field(min_length=1, description="What the user typed.")
    k: int = Field(default=10, ge=1, le=100, description="How many items to return.")
    filters: Filters = Field(
        default_factory=dict,
        description='Equality on item metadata keys, e.g. {"section": "help"}; a list '
        "value matches any of its values.",
    )
    version: str | None = Field(
        default=None,
        max_length=64,
        description="Version or alias to use (v3, 3, champion, challenger); default champion.",
    )
    user_id: str | None = Field(
        default=None,
        max_length=256,
        description="Who searched; during a rollout the same user always gets the same variant.",
    )


class SelectRequest(Strict):
    query: str = Field(min_length=1, description='What the user asked for ("select the walls").')
    threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Least acceptance probability of a selected item; default: the "
        "project's serving_policy.select_threshold.",
    )
    max: int | None = Field(
        default=None, ge=1, le=1000, description="Most items selected (default 100)."
    )
    filters: Filters = Field(default_factory=dict, description="As for search.")
    version: str | None = Field(default=None, max_length=64, description="As for search.")
    user_id: str | None = Field(default=None, max_length=256, description="As for search.")


class Hit(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    id: str = Field(description="The item id.")
    text: str = Field(description="The item text.")
    metadata: dict[str, Any] = Field(description="The item metadata.")
    rank: int = Field(description="1-based position in the returned order.")
    score: float = Field(description="Raw cosine similarity of query and item.")
    probability: float = Field(
        description="Calibrated probability that the user accepts the item, after instant "
        "adaptation to feedback on similar queries."
    )


class Candidate(Hit):
    selected: bool = Field(description="Whether select picked this item.")


class SearchResponse(BaseModel):
    interaction_id: str = Field(description="Attach feedback to this interaction.")
    model_version: str = Field(description="The version that answered, e.g. v3.")
    calibration: str = Field(description="default, platt or isotonic.")
    adapted: bool = Field(description="Whether feedback on similar queries moved any item.")
    variant: str | None = Field(
        default=None,
        description="The rollout variant that answered (see /rollout); null outside a "
        "rollout, for a request naming a version, or while the assigned variant's index builds.",
    )
    items: list[Hit]


class SelectResponse(SearchResponse):
    threshold: float = Field(description="The probability threshold applied.")
    candidates: list[Candidate] = Field(
        description="What a UI shows: the selected items, then the next best ones, so a "
        "user can also pick an item that was missed. These are the interaction's shown items."
    )
