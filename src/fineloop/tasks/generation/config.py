"""The generation task's training config, and the names of the metrics it can gate on.

Plain data (no torch import): the API and CLI validate a project's overrides with it before
any job starts, so a typo in a method name is a 422 at once, not a crash an hour later.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fineloop.errors import validated

# Metric name -> whether higher is better. `evaluate` reports every one it can compute.
METRICS: dict[str, bool] = {
    "sft_loss": False,
    "perplexity": False,
    "preference_accuracy": True,
    "preference_margin": True,
    "edit_ratio": True,
    "rouge_l": True,
    "bleu": True,
    "embedding_cosine": True,
}
METHODS = ("sft", "dpo", "kto")

Method = Literal["auto", "sft", "dpo", "kto", "sft+dpo"]


class GenerationTrainConfig(BaseModel):
    """How to fine-tune a causal LM with a LoRA adapter on a snapshot's train splits."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    method: Method = Field(
        default="auto",
        description="auto: SFT when the snapshot has sft rows, then DPO when it has "
        "preference pairs; KTO on thumbs when it has kto rows and no pairs. sft, dpo, kto: "
        "that stage only; sft+dpo: SFT then DPO on the same adapter.",
    )
    learning_rate: float = Field(default=2e-4, gt=0, le=1, description="Peak AdamW rate.")
    epochs: int = Field(default=3, ge=1, le=100, description="Passes over each train split.")
    max_steps: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Stop each stage after this many optimizer steps, whatever `epochs` "
        "says (quick trials, tests).",
    )
    batch_size: int = Field(default=4, ge=1, le=1024, description="Examples per device step.")
    gradient_accumulation: int = Field(
        default=1, ge=1, le=1024, description="Steps whose gradients are summed per update."
    )
    max_length: int = Field(
        default=1024,
        ge=16,
        le=131_072,
        description="Prompt plus completion tokens kept per example (longer ones are cut).",
    )
    lora_r: int = Field(default=16, ge=1, le=1024, description="LoRA rank.")
    lora_alpha: int = Field(default=32, ge=1, le=4096, description="LoRA scaling (alpha/r).")
    lora_dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on LoRA input.")
    target_modules: str | list[str] = Field(
        default="all-linear",
        description="Modules that get LoRA weights: 'all-linear' or a list of module names "
        "(e.g. ['q_proj', 'v_proj']).",
    )
    dpo_beta: float = Field(
        default=0.1, gt=0, le=10, description="DPO's beta: how far from the reference it may go."
    )
    kto_beta: float = Field(
        default=0.1, gt=0, le=10, description="KTO's beta: how far from the reference it may go."
    )
    replay_share: float = Field(
        default=0.2,
        ge=0,
        le=0.9,
        description="Share of each stage's training rows drawn from the replay sample the "
        "starting adapter carries (what it was trained on before), so old skills stay in "
        "the mix; 0 turns replay off.",
    )
    seed: int = Field(default=13, description="Seed for initialisation, shuffling, sampling.")
    logging_steps: int = Field(
        default=10, ge=1, le=100_000, description="Report the training loss every this many steps."
    )
    report_to: list[str] = Field(
        default_factory=list,
        description="Experiment trackers the Trainer reports to: any of tensorboard, mlflow, "
        "wandb, each needing its package installed where jobs run; [] reports to none.",
    )
    primary_metric: str = Field(
        default="auto",
        description="The metric the gate compares: auto (sft_loss when the test split has "
        "completions, else preference_accuracy) or one of " + ", ".join(METRICS) + ".",
    )
    bf16: Literal["auto"] | bool = Field(
        default="auto",
        description="auto: bf16 autocast when the device has native bf16 math (CUDA bf16, "
        "or a CPU with AVX-512 BF16/AMX); true/false force it.",
    )
    gradient_checkpointing: Literal["auto"] | bool = Field(
        default="auto",
        description="Recompute activations in the backward pass (less memory, ~20% more "
        "compute). auto: on with CUDA, off on a CPU, where memory is rarely the limit.",
    )
    qlora: Literal["auto"] | bool = Field(
        default="auto",
        description="Load the base model in 4 bits (bitsandbytes) under the adapter. auto: "
        "on when CUDA and bitsandbytes are present; true refuses to run without them.",
    )

    @field_validator("report_to")
    @classmethod
    def _installed_reporters(cls, value: list[str]) -> list[str]:
        from fineloop.integrations import check_report_to

        return check_report_to(value)

    @field_validator("primary_metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value != "auto" and value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; valid: auto, {', '.join(METRICS)}")
        return value

    @field_validator("target_modules")
    @classmethod
    def _modules(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, str):
            if value != "all-linear":
                raise ValueError("give 'all-linear' or a list of module names")
            return value
        if not value or any(not name.strip() for name in value):
            raise ValueError("give one or more module names, or 'all-linear'")
        return value

    @classmethod
    def parse(cls, overrides: dict[str, Any]) -> GenerationTrainConfig:
        """Validate a project's overrides; bad values become one `Invalid` naming the field."""
        return validated(cls, overrides, "train.")


def as_config(config: BaseModel) -> GenerationTrainConfig:
    """The config as a `GenerationTrainConfig` (re-validated when it is another model)."""
    if isinstance(config, GenerationTrainConfig):
        return config
    return GenerationTrainConfig.parse(config.model_dump())
