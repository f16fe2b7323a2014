"""How a generation project's feedback becomes a snapshot: the builder's settings.

Plain data (no torch, no datasets): the API validates a project's build options with it
before a job exists. Part of the snapshot's hash, so changing a setting gives a new id.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class GenerationBuildConfig(BaseModel):
    """Splits, the least data worth training on, and length bounds."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    validation_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="Share of prompt groups held out for validation."
    )
    test_fraction: float = Field(
        default=0.2, ge=0, lt=1, description="Share of prompt groups held out for the test."
    )
    min_examples: int = Field(
        default=4,
        ge=1,
        description="Fewer examples than this (SFT rows, DPO pairs and KTO rows together) is "
        "an error: there is nothing worth training on yet.",
    )
    primary_metric: str = Field(
        default="auto",
        min_length=1,
        max_length=64,
        description="The metric the gate compares, copied into snapshot.json for evaluate; "
        "auto lets evaluate choose by the methods the snapshot holds.",
    )
    max_prompt_chars: int = Field(
        default=8_000,
        ge=1,
        le=1_000_000,
        description="Examples whose prompt (all turns together) is longer are dropped, not "
        "cut: a cut prompt may no longer ask what the reply answers.",
    )
    max_completion_chars: int = Field(
        default=8_000,
        ge=1,
        le=1_000_000,
        description="Examples with a longer completion (or chosen/rejected side) are "
        "dropped, not cut: a cut reply would teach the model to stop mid-sentence.",
    )

    @model_validator(mode="after")
    def _room_for_train(self) -> GenerationBuildConfig:
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError("validation_fraction + test_fraction must leave room for train")
        return self
