"""`NerTask`: the only thing the loop sees of the NER family.

Each step imports its module (and with it torch and transformers) only when called, so
finding the task through its entry point stays cheap. The default base is the BERT inside
the packaged all-MiniLM-L6-v2 folder, given a fresh token-classification head.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from fineloop.config import Settings
from fineloop.data.records import ProjectData
from fineloop.tasks.base import (
    BuiltSnapshot,
    Converter,
    Evaluation,
    ProgressSink,
    ReviewEdit,
    Shown,
    TaskDefaults,
)
from fineloop.tasks.ner.options import parse_options

if TYPE_CHECKING:
    from fastapi import APIRouter

    from fineloop.feedback.events import EventEnvelope
    from fineloop.policies import ServingPolicy
    from fineloop.serving.family import TaskServing
    from fineloop.serving.state import ServingState
    from fineloop.tasks.ner.config import NerTrainConfig
    from fineloop.tasks.ner.predict import NerPredictor
    from fineloop.web.families import Panels

TASK = "ner"


class NerTask(TaskDefaults):
    """build → train → evaluate → load for entity extraction."""

    name = TASK
    primary_metric = "f1"  # entity-level micro F1 (seqeval)
    greater_is_better = True

    def default_base_model(self) -> str:
        from fineloop.tasks.embedding.config import packaged_minilm_path

        return packaged_minilm_path()

    def options(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return parse_options(raw).model_dump()

    def check_feedback(
        self, options: Mapping[str, Any], event: EventEnvelope, shown: Shown | None
    ) -> list[tuple[str, str]]:
        from fineloop.tasks.ner.feedback import check_event

        return check_event(parse_options(options), event, shown)

    def review_score(
        self, options: Mapping[str, Any], shown: Shown, policy: ServingPolicy
    ) -> float | None:
        """1 - the least confidence of a shown span; None when no span with a score was
        shown (a text where the model found nothing tells nothing about its doubt)."""
        output = shown[1]
        spans = output.get("spans") if isinstance(output, dict) else None
        scores = [
            float(span["score"])
            for span in (spans if isinstance(spans, list) else [])
            if isinstance(span, dict)
            and isinstance(span.get("score"), int | float)
            and not isinstance(span.get("score"), bool)
        ]
        return round(1.0 - min(scores), 6) if scores else None

    def review_answers(
        self, model: Path, snapshot: Path, options: Mapping[str, Any], inputs: list[Any]
    ) -> list[Any] | None:
        """The trained model's spans for each input's text, as `review_answer` compares."""
        from fineloop.tasks.ner.predict import NerPredictor
        from fineloop.tasks.ner.spans import text_of

        texts = [text_of(value) for value in inputs]
        readable = [t for t in texts if t is not None]
        found = iter(NerPredictor(str(model)).extract(readable) if readable else [])
        return [None if t is None else self.review_answer({"spans": next(found)}) for t in texts]

    def review_edit(self, options: Mapping[str, Any], shown: Shown) -> ReviewEdit | None:
        from fineloop.tasks.ner.review_edit import spans_edit

        return spans_edit(options, shown)

    def review_event(self, options: Mapping[str, Any], shown: Shown, text: str) -> dict[str, Any]:
        from fineloop.tasks.ner.review_edit import spans_event

        return spans_event(shown, text)

    def review_answer(self, output: Any) -> Any:
        spans = output.get("spans") if isinstance(output, dict) else None
        if not isinstance(spans, list):
            return None
        found = [
            (s.get("start"), s.get("end"), s.get("label")) for s in spans if isinstance(s, dict)
        ]
        return sorted(found, key=repr)

    def train_config(self, overrides: dict[str, Any]) -> NerTrainConfig:
        from fineloop.tasks.ner.config import NerTrainConfig

        return NerTrainConfig.parse(overrides)

    def search_space(self) -> dict[str, dict[str, Any]]:
        """What a hyperparameter search tunes unless told otherwise, judged by entity F1
        on the validation split."""
        return {
            "learning_rate": {"type": "float", "low": 1e-5, "high": 2e-4, "log": True},
            "epochs": {"type": "int", "low": 2, "high": 10},
            "batch_size": {"type": "categorical", "choices": [8, 16, 32]},
            "class_weight_power": {"type": "float", "low": 0.0, "high": 1.0},
        }

    def check_trainable(self, data: ProjectData) -> None:
        from fineloop.tasks.ner.build import require_examples

        require_examples(data)

    def build(
        self,
        data: ProjectData,
        settings: Settings,
        out_dir: Path,
        *,
        seed: int,
        model_path: str | None = None,
        **options: Any,
    ) -> BuiltSnapshot:
        from fineloop.tasks.ner.build import build_snapshot

        return build_snapshot(data, settings, out_dir, seed=seed, **options)

    def train(
        self,
        snapshot: Path,
        base_model: str,
        config: BaseModel,
        out_dir: Path,
        sink: ProgressSink,
    ) -> Path:
        from fineloop.tasks.ner.train import train

        return train(snapshot, base_model, config, out_dir, sink)

    def evaluate(self, model: str, snapshot: Path, split: str = "test") -> Evaluation:
        from fineloop.tasks.ner.evaluate import evaluate

        return evaluate(model, snapshot, split)

    def load(self, model: str) -> NerPredictor:
        from fineloop.tasks.ner.predict import NerPredictor

        return NerPredictor(model)

    def serving(self, hub: ServingState) -> TaskServing[Any]:
        from fineloop.tasks.ner.serving import NerServing

        return NerServing(hub)

    def routes(self) -> APIRouter:
        from fineloop.tasks.ner.routes import router

        return router

    def converters(self) -> Mapping[str, Converter]:
        from fineloop.tasks.ner.imports import CONVERTERS

        return CONVERTERS

    def panels(self) -> Panels | None:
        from fineloop.tasks.ner.web import PANELS

        return PANELS

    def commands(self) -> Mapping[str, Callable[..., Any]]:
        from fineloop.tasks.ner.cli import extract

        return {"extract": extract}
