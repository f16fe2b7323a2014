"""The embedding task: selection feedback → a fine-tuned sentence-transformers model.

`EmbeddingTask` is the only thing the loop sees. Each step imports its module (and with it
torch) only when called, so finding the task through its entry point stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from fineloop.config import Settings
from fineloop.data.records import ProjectData
from fineloop.tasks.base import (
    BuiltSnapshot,
    Evaluation,
    ProgressSink,
    Refitted,
    ReviewEdit,
    Shown,
    TaskDefaults,
)
from fineloop.tasks.embedding.config import EmbeddingTrainConfig, packaged_minilm_path

if TYPE_CHECKING:
    from fastapi import APIRouter

    from fineloop.policies import ServingPolicy
    from fineloop.serving.state import ServingState
    from fineloop.tasks.embedding.build import BuildConfig
    from fineloop.tasks.embedding.predict import EmbeddingPredictor
    from fineloop.tasks.embedding.serving.state import EmbeddingServing

__all__ = ["EmbeddingTask", "EmbeddingTrainConfig", "packaged_minilm_path"]


class EmbeddingTask(TaskDefaults):
    """build → train → evaluate → load for retrieval and selection over a catalog."""

    name = "embedding"
    primary_metric = "ndcg@10"
    greater_is_better = True

    def default_base_model(self) -> str:
        return packaged_minilm_path()

    def train_config(self, overrides: dict[str, Any]) -> EmbeddingTrainConfig:
        return EmbeddingTrainConfig.parse(overrides)

    def search_space(self) -> dict[str, dict[str, Any]]:
        """What a hyperparameter search tunes unless told otherwise (format: SearchParam in
        fineloop.jobs.search_space): the levers that matter most for fine-tuning."""
        return {
            "learning_rate": {"type": "float", "low": 5e-6, "high": 2e-4, "log": True},
            "epochs": {"type": "int", "low": 1, "high": 4},
            "batch_size": {"type": "categorical", "choices": [16, 32, 64]},
            "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
            "hard_negatives": {"type": "int", "low": 0, "high": 3},
            "loss": {"type": "categorical", "choices": ["mnrl", "cosent", "online_contrastive"]},
        }

    def build(
        self,
        data: ProjectData,
        settings: Settings,
        out_dir: Path,
        *,
        seed: int,
        model_path: str | None = None,
        config: BuildConfig | None = None,
    ) -> BuiltSnapshot:
        from fineloop.tasks.embedding.build import build_snapshot

        return build_snapshot(
            data, settings, out_dir, seed=seed, config=config, model_path=model_path
        )

    def check_trainable(self, data: ProjectData) -> None:
        """The count `build` checks, made without mining or writing anything."""
        from fineloop.tasks.embedding.build import BuildConfig, count_examples, require_examples

        config = BuildConfig()
        require_examples(count_examples(data, config), config, data.project.name)

    def train(
        self,
        snapshot: Path,
        base_model: str,
        config: BaseModel,
        out_dir: Path,
        sink: ProgressSink,
    ) -> Path:
        from fineloop.tasks.embedding.train import train

        return train(snapshot, base_model, config, out_dir, sink)

    def refit(
        self,
        snapshot: Path,
        base_model: str,
        config: BaseModel,
        trained: Path,
        out_dir: Path,
        sink: ProgressSink,
    ) -> Refitted | None:
        from fineloop.tasks.embedding.refit import refit

        return refit(snapshot, base_model, config, trained, out_dir, sink)

    def evaluate(self, model: str, snapshot: Path, split: str = "test") -> Evaluation:
        from fineloop.tasks.embedding.evaluate import evaluate

        return evaluate(model, snapshot, split)

    def load(self, model: str) -> EmbeddingPredictor:
        from fineloop.tasks.embedding.predict import EmbeddingPredictor

        return EmbeddingPredictor(model)

    def serving(self, hub: ServingState) -> EmbeddingServing:
        from fineloop.tasks.embedding.serving.state import EmbeddingServing

        return EmbeddingServing(hub)

    def routes(self) -> APIRouter:
        from fineloop.tasks.embedding.routes import router

        return router

    def review_score(
        self, options: Mapping[str, Any], shown: Shown, policy: ServingPolicy
    ) -> float | None:
        from fineloop.tasks.embedding.review import ranking_uncertainty

        return ranking_uncertainty(shown[1], policy.select_threshold)

    def review_answer(self, output: Any) -> Any:
        from fineloop.tasks.embedding.review import top_item

        return top_item(output)

    def review_answers(
        self, model: Path, snapshot: Path, options: Mapping[str, Any], inputs: list[Any]
    ) -> list[Any] | None:
        from fineloop.tasks.embedding.review import candidate_top_items

        return list(candidate_top_items(model, snapshot, inputs))

    def review_edit(self, options: Mapping[str, Any], shown: Shown) -> ReviewEdit | None:
        from fineloop.tasks.embedding.review import label_edit

        return label_edit(shown[1])

    def review_event(self, options: Mapping[str, Any], shown: Shown, text: str) -> dict[str, Any]:
        from fineloop.tasks.embedding.review import label_event

        return label_event(text)
