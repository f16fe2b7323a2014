"""Per-project training and serving policies: data stored with the project, like rewards."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from fineloop.validation import INPUT, Int64, JsonObject, Seed

ReuseMode = Literal["off", "exact", "direct", "few_shot"]


class TriggerPolicy(BaseModel):
    """When a project retrains by itself (both off by default: training starts by hand)."""

    model_config = INPUT

    feedback_count: Int64 | None = Field(
        default=None,
        ge=1,
        description="Train after this many new qualifying feedback events (|reward| at least "
        "the reward policy's quality_threshold) since the last training job; null: off.",
    )
    interval_minutes: int | None = Field(
        default=None,
        ge=1,
        le=10 * 366 * 24 * 60,  # ten years: past it the schedule's datetime arithmetic fails
        description="Train on a schedule: this many minutes after the last training job "
        "was created, if qualifying feedback arrived since; null: off.",
    )
    debounce_seconds: int = Field(
        default=60,
        ge=0,
        le=86_400,
        description="Wait this long after the feedback count is reached (so a burst lands "
        "in one job), and leave at least this long between two triggered jobs.",
    )


class TrainingPolicy(BaseModel):
    """How a project trains and when a candidate may replace the champion."""

    model_config = INPUT

    train: JsonObject = Field(
        default_factory=dict,
        description="Overrides of the task's training config (e.g. loss, epochs, batch_size); "
        "validated by the task.",
    )
    gate_margin: float = Field(
        default=0.0,
        ge=-1,
        le=1,
        description="A candidate is promoted only if the lower bound of the 95% bootstrap "
        "interval of (candidate - champion) on the primary metric is above this.",
    )
    auto_promote: bool = Field(
        default=True, description="Promote a candidate that passes the gate at once."
    )
    refit: bool = Field(
        default=False,
        description="Once a candidate passes the gate, train once more from the same "
        "starting model on train + validation with the same settings and the epoch count "
        "the candidate kept as best (no early stopping), evaluate it on the same test split "
        "and register it instead, unless its test score is below the candidate's. Families "
        "that cannot refit (generation, NER) register the candidate and say so.",
    )
    bootstrap_samples: int = Field(default=1000, ge=100, le=100_000)
    seed: Seed = Field(default=13, description="Seed for splits, sampling and training.")
    max_attempts: int = Field(
        default=2,
        ge=1,
        le=10,
        description="Runs a training job gets when its worker dies (process or machine): "
        "it is queued again, resuming from its last checkpoint, until this many attempts "
        "were made; then it fails. A job that fails on its own is not retried.",
    )
    trigger: TriggerPolicy = Field(
        default_factory=TriggerPolicy,
        description="Automatic training: after N new feedback events and/or on a schedule.",
    )
    webhook_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        max_length=2048,
        description="URL that receives a JSON POST when a job of this project ends and when "
        "its champion changes (promotion, rollback); null: none.",
    )


class ServingPolicy(BaseModel):
    """How a project serves: calibration, instant adaptation, selection thresholds."""

    model_config = INPUT

    online_adaptation: bool = Field(
        default=True,
        description="Let feedback on similar past queries re-rank results at once.",
    )
    adaptation_strength: float = Field(
        default=4.0, ge=0, le=50, description="Weight of past feedback, in logits."
    )
    adaptation_min_similarity: float = Field(
        default=0.75,
        ge=0,
        le=1,
        description="Past queries less similar than this to the new one are ignored.",
    )
    adaptation_half_life_days: float | None = Field(
        default=30.0, gt=0, description="Age at which past feedback counts half."
    )
    adaptation_per_variant: bool = Field(
        default=True,
        description="During a rollout, adapt each variant only from feedback on its own "
        "interactions (and feedback from before the rollout), so variants do not learn from "
        "each other's users and the A/B test compares the models.",
    )
    calibration: Literal["auto", "isotonic", "platt"] = Field(
        default="auto",
        description="Map from similarity to acceptance probability: isotonic with enough "
        "feedback (auto: >= 200 judged items), else Platt scaling.",
    )
    select_threshold: float = Field(
        default=0.5, ge=0, le=1, description="Default acceptance probability for `select`."
    )
    max_query_chars: int = Field(default=2_000, ge=1, le=100_000)
    reuse_corrections: ReuseMode | None = Field(
        default=None,
        description="Families that answer with text (generation): reuse the corrections "
        "users gave, between retrains. off; exact: a prompt equal up to case, punctuation "
        "and spacing gets its correction back; direct: so does a prompt whose cosine to a "
        "corrected one is at least reuse_min_similarity; few_shot: exact, else up to "
        "reuse_shots corrected prompts at least adaptation_min_similarity alike go before "
        "the conversation as earlier turns. null: the family's default (generation: exact, "
        "the only mode measured harmless). Off while "
        "online_adaptation is false.",
    )
    reuse_min_similarity: float = Field(
        default=0.95,
        ge=0,
        le=1,
        description="Cosine (all-MiniLM-L6-v2) from which `direct` answers with a "
        "correction as it is.",
    )
    reuse_shots: int = Field(
        default=2, ge=1, le=8, description="Most corrected examples `few_shot` adds."
    )


ReviewRanking = Literal["uncertainty", "disagreement", "random", "recent"]


class ReviewPolicy(BaseModel):
    """How a project's review queue (interactions nobody gave feedback on yet) is ordered."""

    model_config = INPUT

    ranking: ReviewRanking = Field(
        default="uncertainty",
        description="uncertainty: where the model was least sure first (the family's "
        "review_score; embedding: a shown item's calibrated probability nearest the select "
        "threshold); disagreement: inputs that two versions answered differently first, then "
        "by uncertainty; random: a fixed shuffle; recent: newest first. Interactions without "
        "a score go after those with one, newest first.",
    )
    limit: int = Field(
        default=50, ge=1, le=500, description="Interactions per page of the queue by default."
    )
    scan: int = Field(
        default=5_000,
        ge=100,
        le=50_000,
        description="How many of the newest interactions without feedback are ranked: older "
        "ones wait until these are reviewed.",
    )
