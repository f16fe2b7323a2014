"""`GenerationTask`: the only thing the loop sees of the generation family.

Each step imports its module (and with it torch, TRL, PEFT) only when called, so finding
the task through its entry point stays cheap. The default base, SmolLM2-135M-Instruct, is
named by its prepared folder under the models root and converted from the packaged GGUF the
first time a step needs it (prepare.py): on a job's worker or the serving model loader,
never inside a request or a store transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from fineloop.config import Settings, get_settings
from fineloop.data.records import ProjectData
from fineloop.tasks.base import (
    BuiltSnapshot,
    Evaluation,
    ProgressSink,
    ReviewEdit,
    Shown,
    TaskDefaults,
)
from fineloop.tasks.generation.config import GenerationTrainConfig

if TYPE_CHECKING:
    from fastapi import APIRouter

    from fineloop.serving.state import ServingState
    from fineloop.tasks.generation.build_config import GenerationBuildConfig
    from fineloop.tasks.generation.predict import GenerationPredictor
    from fineloop.tasks.generation.serving import GenerationServing
    from fineloop.web.families import Panels

TASK = "generation"


class GenerationTask(TaskDefaults):
    """build → train → evaluate → load for chat and completion models."""

    name = TASK
    primary_metric = "sft_loss"  # the default; a project may pick another (primary_metric)
    greater_is_better = False

    def default_base_model(self) -> str:
        from fineloop.tasks.generation.prepare import DEFAULT_GENERATION_MODEL, prepared_path

        return str(prepared_path(DEFAULT_GENERATION_MODEL, get_settings()))

    def train_config(self, overrides: dict[str, Any]) -> GenerationTrainConfig:
        return GenerationTrainConfig.parse(overrides)

    def search_space(self) -> dict[str, dict[str, Any]]:
        """What a hyperparameter search tunes unless told otherwise: the LoRA levers that
        matter most, judged by likelihood on the validation split."""
        return {
            "learning_rate": {"type": "float", "low": 1e-5, "high": 5e-4, "log": True},
            "epochs": {"type": "int", "low": 1, "high": 4},
            "lora_r": {"type": "categorical", "choices": [4, 8, 16, 32]},
            "dpo_beta": {"type": "float", "low": 0.05, "high": 0.5, "log": True},
        }

    def check_trainable(self, data: ProjectData) -> None:
        from fineloop.tasks.generation.build import count_examples, require_examples

        config = _build_config(data, None)
        require_examples(count_examples(data, config), config, data.project.name)

    def build(
        self,
        data: ProjectData,
        settings: Settings,
        out_dir: Path,
        *,
        seed: int,
        model_path: str | None = None,
        config: GenerationBuildConfig | None = None,
    ) -> BuiltSnapshot:
        from fineloop.tasks.generation.build import build_snapshot

        return build_snapshot(
            data,
            settings,
            out_dir,
            seed=seed,
            config=_build_config(data, config),
            model_path=model_path,
        )

    def train(
        self,
        snapshot: Path,
        base_model: str,
        config: BaseModel,
        out_dir: Path,
        sink: ProgressSink,
    ) -> Path:
        from fineloop.tasks.generation.train import train

        ensure_prepared(base_model)
        return train(snapshot, base_model, config, out_dir, sink)

    def evaluate(self, model: str, snapshot: Path, split: str = "test") -> Evaluation:
        from fineloop.tasks.generation.evaluate import evaluate

        ensure_prepared(model)
        return evaluate(model, snapshot, split)

    def load(self, model: str) -> GenerationPredictor:
        from fineloop.tasks.generation.predict import GenerationPredictor

        ensure_prepared(model)
        return GenerationPredictor(model)

    def serving(self, hub: ServingState) -> GenerationServing:
        from fineloop.tasks.generation.serving import GenerationServing

        return GenerationServing(hub)  # the shared predictor serving + correction reuse

    def routes(self) -> APIRouter:
        from fineloop.tasks.generation.routes import router

        return router

    def panels(self) -> Panels:
        from fineloop.tasks.generation.web import PANELS

        return PANELS

    def commands(self) -> Mapping[str, Callable[..., Any]]:
        from fineloop.tasks.generation.cli import generate

        return {"generate": generate}

    def review_edit(self, options: Mapping[str, Any], shown: Shown) -> ReviewEdit | None:
        from fineloop.tasks.generation.prompts import output_text

        reply = output_text(shown[1])
        if reply is None:
            return None
        return ReviewEdit("edit", reply, "The reply as it should have been.")

    def review_event(self, options: Mapping[str, Any], shown: Shown, text: str) -> dict[str, Any]:
        """A correction with the rewritten reply (an unchanged reply is a thumbs up)."""
        from fineloop.errors import Invalid
        from fineloop.tasks.generation.prompts import output_text

        if not text.strip():
            raise Invalid("the corrected reply is empty: write what it should be", field="text")
        if text.strip() == (output_text(shown[1]) or "").strip():
            raise Invalid("the reply is unchanged: give it a thumbs up instead", field="text")
        return {"kind": "correction", "output": text}

    def review_answer(self, output: Any) -> Any:
        """The reply's text: how it ended or whether it was adapted is no disagreement.
        (No `review_score`: a reply stores no token probabilities, so the review queue
        orders generation interactions by recency.)"""
        text = output.get("text") if isinstance(output, dict) else output
        return text if isinstance(text, str) else None


def ensure_prepared(model: str) -> None:
    """Convert the default base (or the base an adapter names) if it is a preparable
    model's folder that does not exist yet."""
    from fineloop.tasks.generation.models import split_model
    from fineloop.tasks.generation.prepare import PREPARABLE, prepare_model, prepared_path

    settings = get_settings()
    base, _adapter = split_model(model)
    for name in PREPARABLE:
        target = prepared_path(name, settings)
        if Path(base) == target and not target.exists():
            prepare_model(name, settings)


def _build_config(data: ProjectData, given: GenerationBuildConfig | None) -> GenerationBuildConfig:
    """The builder's config, judged by the primary metric the project's training names."""
    from fineloop.tasks.generation.build_config import GenerationBuildConfig

    config = given or GenerationBuildConfig()
    primary = data.project.train.get("primary_metric")
    if isinstance(primary, str) and config.primary_metric == "auto":
        config = config.model_copy(update={"primary_metric": primary})
    return config
