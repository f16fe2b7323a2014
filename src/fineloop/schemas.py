"""Request and response shapes shared by the API, the SDK and the CLI.

`XCreate` is what a user sends, `XPublic` what fineloop returns. Inputs forbid unknown keys
so a typo is an error, not a silently ignored field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, JsonValue

from fineloop.feedback.events import FeedbackEvent
from fineloop.feedback.rewards import RewardPolicy
from fineloop.policies import ReviewPolicy, ServingPolicy, TrainingPolicy
from fineloop.validation import INPUT, Json, JsonObject, Timestamp


def _installed_task(name: str) -> str:
    from fineloop.tasks import available

    if name not in available():
        known = ", ".join(sorted(available())) or "none"
        raise ValueError(f"no task {name!r} is installed (installed: {known})")
    return name


# Any family installed under the `fineloop.tasks` entry points, plugins included.
TaskName = Annotated[str, Field(max_length=32), AfterValidator(_installed_task)]
ProjectName = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="Lower-case letters, digits, '-' and '_', at most 64 characters.",
    ),
]


class Strict(BaseModel):
    """Request models: strict types (a boolean is not a number), unknown keys refused."""

    model_config = INPUT


class ProjectCreate(Strict):
    name: ProjectName
    task: TaskName = Field(description="What the project's model does.")
    base_model: str | None = Field(
        default=None,
        max_length=512,
        description="Local path or hub id of the model to start from (task default if empty).",
    )
    description: str = Field(default="", max_length=10_000)
    reward_policy: RewardPolicy = Field(default_factory=RewardPolicy)
    training_policy: TrainingPolicy = Field(default_factory=TrainingPolicy)
    serving_policy: ServingPolicy = Field(default_factory=ServingPolicy)
    review_policy: ReviewPolicy = Field(default_factory=ReviewPolicy)
    task_options: JsonObject = Field(
        default_factory=dict,
        description="What the task needs to know about the project (ner: "
        '{"entity_types": ["EQUIPMENT", ...]}); the task validates it.',
    )


class ProjectUpdate(Strict):
    base_model: str | None = Field(default=None, max_length=512)
    description: str | None = Field(default=None, max_length=10_000)
    reward_policy: RewardPolicy | None = Field(
        default=None, description="Replacing the policy recomputes every stored reward."
    )
    training_policy: TrainingPolicy | None = None
    serving_policy: ServingPolicy | None = None
    review_policy: ReviewPolicy | None = None
    task_options: JsonObject | None = Field(
        default=None, description="Replaces the task options; the task validates them."
    )


class ProjectPublic(BaseModel):
    name: str
    task: str
    base_model: str | None
    description: str
    reward_policy: RewardPolicy
    training_policy: TrainingPolicy
    serving_policy: ServingPolicy
    review_policy: ReviewPolicy
    task_options: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ItemIn(Strict):
    id: str = Field(min_length=1, max_length=256, description="Your id for the item.")
    text: str = Field(min_length=1, max_length=100_000, description="What the model reads.")
    metadata: JsonObject = Field(default_factory=dict)


class ItemsUpsert(Strict):
    items: list[ItemIn] = Field(min_length=1, max_length=10_000)


class ItemPublic(BaseModel):
    id: str
    text: str
    metadata: dict[str, JsonValue]
    updated_at: datetime


class InteractionCreate(Strict):
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Your id; logging the same id twice returns the first record.",
    )
    input: Json = Field(description="What the model was given (query, prompt, text).")
    output: Json = Field(
        description='What the user saw. Rankings: {"items": [{"id": ..., "score": ...}]}.'
    )
    model_version: str | None = Field(default=None, max_length=128)
    variant: str | None = Field(default=None, max_length=64)
    user_id: str | None = Field(default=None, max_length=256)
    latency_ms: float | None = Field(default=None, ge=0)
    created_at: Timestamp | None = None
    metadata: JsonObject = Field(default_factory=dict)


class InteractionsCreate(Strict):
    interactions: list[InteractionCreate] = Field(min_length=1, max_length=10_000)


class InteractionPublic(BaseModel):
    id: str
    input: JsonValue
    output: JsonValue
    model_version: str | None
    variant: str | None
    user_id: str | None
    latency_ms: float | None
    metadata: dict[str, JsonValue]
    created_at: datetime


class FeedbackBatch(Strict):
    events: list[FeedbackEvent] = Field(min_length=1, max_length=10_000)


class FeedbackAck(BaseModel):
    id: int
    created: bool = Field(description="False when an earlier event had the same idempotency key.")
    reward: float


class BatchAck(BaseModel):
    ids: list[int]
    created: int
    duplicates: int


class FeedbackPublic(BaseModel):
    id: int
    kind: str
    interaction_id: str | None
    input: JsonValue | None
    user_id: str | None
    timestamp: datetime
    received_at: datetime
    idempotency_key: str | None
    difficulty: float | None
    payload: dict[str, JsonValue]
    metadata: dict[str, JsonValue]
    reward: float = Field(description="Stored reward (policy value x difficulty factor).")
    effective_reward: float = Field(description="Reward with temporal decay as of now.")
    trainable: bool = Field(description="Whether |effective_reward| clears quality_threshold.")


class FeedbackPage(BaseModel):
    items: list[FeedbackPublic]
    next_cursor: int | None = Field(description="Pass as `after` to get the next page.")


class HistogramBin(BaseModel):
    low: float
    high: float
    count: int


class TimeBucket(BaseModel):
    start: datetime
    count: int
    mean_reward: float


class RewardStats(BaseModel):
    total: int
    trainable: int
    by_kind: dict[str, int]
    mean_reward: float | None
    histogram: list[HistogramBin]
    over_time: list[TimeBucket]


class ImportReport(BaseModel):
    resource: str
    rows: int
    created: int
    duplicates: int


class ApiKeyCreate(Strict):
    name: str = Field(min_length=1, max_length=128)
    scope: Literal["ingest", "admin"]


class ApiKeyPublic(BaseModel):
    id: int
    name: str
    prefix: str
    scope: str
    revoked: bool
    created_at: datetime
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="The secret; shown once, stored only as a hash.")
