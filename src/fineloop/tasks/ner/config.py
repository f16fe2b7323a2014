"""The NER task's training config.

Plain data (no torch import): the API and CLI validate a project's overrides with it before
any job starts, so a typo is a 422 at once, not a failed job later.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fineloop.errors import validated


class NerTrainConfig(BaseModel):
    """How to fine-tune a token classifier on a snapshot's train split."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    learning_rate: float = Field(default=5e-5, gt=0, le=1, description="Peak AdamW rate.")
    epochs: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Passes over the train split at most (early stopping may end sooner).",
    )
    max_steps: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Stop after this many optimizer steps, whatever `epochs` says "
        "(quick trials, tests).",
    )
    batch_size: int = Field(default=16, ge=1, le=1024, description="Windows per device step.")
    max_length: int = Field(
        default=256,
        ge=16,
        le=8192,
        description="Tokens per window (capped by the model's own limit). A longer text is "
        "split into overlapping windows, never cut.",
    )
    weight_decay: float = Field(default=0.01, ge=0, le=1, description="AdamW weight decay.")
    warmup_ratio: float = Field(
        default=0.1, ge=0, le=0.5, description="Share of the steps the learning rate warms up."
    )
    class_weight_power: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Tag weights in the loss: weight = count^-power, normalised so the "
        "average token weighs 1. 0 = unweighted; 1 = inverse frequency (rare types count "
        "most).",
    )
    early_stopping_patience: int = Field(
        default=2,
        ge=0,
        le=100,
        description="Stop after this many evaluations (one per epoch) without a gain in "
        "validation F1; 0 never stops early. The best epoch is the one saved either way.",
    )
    lora: bool = Field(
        default=False,
        description="Train a LoRA adapter (and the head) instead of every weight; it is "
        "merged into the model before saving, so the result is a plain model folder.",
    )
    lora_r: int = Field(default=16, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: int = Field(default=32, ge=1, le=4096, description="LoRA scaling (alpha/r).")
    lora_dropout: float = Field(default=0.1, ge=0, lt=1, description="Dropout on LoRA input.")
    seed: int = Field(default=13, description="Seed for the head's initialisation, shuffling.")
    logging_steps: int = Field(
        default=10, ge=1, le=100_000, description="Report the training loss every this many steps."
    )
    bf16: Literal["auto"] | bool = Field(
        default="auto",
        description="auto: bf16 autocast when the device has native bf16 math (CUDA bf16, "
        "or a CPU with AVX-512 BF16/AMX); true/false force it.",
    )

    @classmethod
    def parse(cls, overrides: dict[str, Any]) -> NerTrainConfig:
        """Validate a project's overrides; bad values become one `Invalid` naming the field."""
        return validated(cls, overrides, "train.")


def as_config(config: BaseModel) -> NerTrainConfig:
    """The config as a `NerTrainConfig` (re-validated when it is another model)."""
    if isinstance(config, NerTrainConfig):
        return config
    return NerTrainConfig.parse(config.model_dump())
