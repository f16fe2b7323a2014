"""A small task that still computes, registered as a plugin (entry point) by the tests.

Its "model" is a folder with model.json holding a skill level; training adds `gain` to the
skill step by step (reporting loss and progress, obeying cancel), and evaluation scores each
held-out query as skill plus a fixed per-query offset. So the gate's outcome follows from
`gain` exactly: positive gains pass a zero margin, zero or negative gains fail it. A refit
(`training_policy.refit`) gets the parent's skill plus `refit_gain`, if set.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from fineloop.api.deps import Ingest
from fineloop.api.responses import BODY, BUSY, KEYED
from fineloop.config import Settings
from fineloop.data import ProjectData
from fineloop.data.hashing import content_hash
from fineloop.errors import Invalid
from fineloop.rollouts.routing import route
from fineloop.serving import get_serving
from fineloop.serving.family import PredictorServing
from fineloop.serving.interactions import log_interaction
from fineloop.serving.state import ServingState
from fineloop.tasks.base import BuiltSnapshot, Evaluation, ProgressSink, Refitted, TaskDefaults

MIN_EXAMPLES = 6


class FakeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gain: float = Field(default=0.1, description="Skill the candidate gains over its parent.")
    steps: int = Field(default=4, ge=1, description="Training steps.")
    step_seconds: float = Field(default=0.0, ge=0, description="Pause per step (slow runs).")
    fail: bool = Field(default=False, description="Raise during training.")
    refit_gain: float | None = Field(
        default=None,
        description="With refit on: the refit's skill over the parent (None: the family "
        "makes no refit, as one without the capability).",
    )
    refit_fail: bool = Field(default=False, description="Raise during the refit.")


def make_model(folder: Path, skill: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps({"skill": skill}))
    return folder


def skill_of(model: str) -> float:
    return float(json.loads((Path(model) / "model.json").read_text())["skill"])


def _offset(query: str) -> float:
    return (int(hashlib.sha256(query.encode()).hexdigest()[:4], 16) % 100) / 1000 - 0.05


class FakeTask(TaskDefaults):
    name = "fake"
    primary_metric = "score"
    greater_is_better = True

    def default_base_model(self) -> str:
        raise Invalid("the fake task needs an explicit base model", field="base_model")

    def train_config(self, overrides: dict[str, Any]) -> BaseModel:
        try:
            return FakeConfig.model_validate(overrides)
        except ValueError as error:
            raise Invalid(f"train: {error}", field="train") from None

    def search_space(self) -> dict[str, dict[str, Any]]:
        return {}  # no default: a search must name what it tunes

    def check_trainable(self, data: ProjectData) -> None:
        """The cheap count the API asks for before it queues a job."""
        have = len(_examples(data))
        if have < MIN_EXAMPLES:
            raise Invalid(f"training needs at least {MIN_EXAMPLES} labelled examples, has {have}")

    def build(
        self,
        data: ProjectData,
        settings: Settings,
        out_dir: Path,
        *,
        seed: int,
        model_path: str | None = None,
    ) -> BuiltSnapshot:
        """Each label event with `items` is an example; every third query is held out."""
        examples = _examples(data)
        if len(examples) < MIN_EXAMPLES:
            raise Invalid(
                f"training needs at least {MIN_EXAMPLES} labelled examples, has {len(examples)}"
            )
        splits: dict[str, list[dict[str, Any]]] = {"train": [], "validation": [], "test": []}
        for index, example in enumerate(examples):
            splits[("train", "validation", "test")[(index + seed) % 3]].append(example)
        content = json.dumps({"project": data.project.name, "seed": seed, "splits": splits})
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "examples.json").write_text(content)
        counts = {name: len(rows) for name, rows in splits.items()}
        return BuiltSnapshot(
            id=content_hash(content),
            path=out_dir,
            splits=counts,
            stats={"examples": len(examples)},
            config={"seed": seed, "model_path": model_path, "train": dict(data.project.train)},
            feedback_watermark=data.watermark,
        )

    def train(
        self, snapshot: Path, base_model: str, config: BaseModel, out_dir: Path, sink: ProgressSink
    ) -> Path:
        assert isinstance(config, FakeConfig)
        skill = skill_of(base_model)
        for step in range(1, config.steps + 1):
            if sink.cancelled():
                break
            if config.fail:
                raise RuntimeError("the fake trainer broke on purpose")
            time.sleep(config.step_seconds)
            sink.metric("loss", step, 1.0 / step)
            sink.progress(step / config.steps, f"step {step}/{config.steps}")
        sink.metric("eval_score", config.steps, skill + config.gain)
        return make_model(out_dir / "model", skill + config.gain)

    def refit(
        self,
        snapshot: Path,
        base_model: str,
        config: BaseModel,
        trained: Path,
        out_dir: Path,
        sink: ProgressSink,
    ) -> Refitted | None:
        """The parent's skill plus `refit_gain`, trained on train + validation."""
        assert isinstance(config, FakeConfig)
        if config.refit_gain is None:
            return super().refit(snapshot, base_model, config, trained, out_dir, sink)
        if config.refit_fail:
            raise RuntimeError("the fake refit broke on purpose")
        splits = json.loads((snapshot / "examples.json").read_text())["splits"]
        sink.progress(1.0, "refitted")
        folder = make_model(out_dir / "model", skill_of(base_model) + config.refit_gain)
        return Refitted(
            folder,
            {"epochs": 1, "train_examples": len(splits["train"]) + len(splits["validation"])},
        )

    def evaluate(self, model: str, snapshot: Path, split: str = "test") -> Evaluation:
        skill = skill_of(model)
        rows = json.loads((snapshot / "examples.json").read_text())["splits"][split]
        scores = [min(1.0, max(0.0, skill + _offset(row["query"]))) for row in rows]
        mean = sum(scores) / len(scores) if scores else 0.0
        return Evaluation(metrics={"score": mean}, primary="score", per_example=scores)

    def load(self, model: str) -> FakePredictor:
        return FakePredictor(skill_of(model))

    def serving(self, hub: ServingState) -> PredictorServing:
        return PredictorServing(hub)  # the model is all a version needs to answer

    def routes(self) -> APIRouter | None:
        """POST /v1/projects/{p}/<task>/score: the served version's score for a query,
        routed (champion, named version or rollout variant) and logged by the shared
        serving plumbing; nothing here knows about versions or rollouts."""
        router = APIRouter(prefix=f"/v1/projects/{{project}}/{self.name}")
        task = self.name

        @router.post("/score", dependencies=[Ingest], responses={**KEYED, **BODY, **BUSY})
        def score(project: str, body: ScoreRequest, request: Request) -> dict[str, Any]:
            started = time.perf_counter()
            hub = get_serving(request.app)
            routed = route(hub, project, body.version, body.user_id, task=task)
            predictor: FakePredictor = routed.served.resource
            value = predictor.score(body.query)
            logged = log_interaction(
                hub.store,
                routed,
                input=body.query,
                output={"score": value},
                endpoint="score",
                user_id=body.user_id,
                started=started,
            )
            return {
                "interaction_id": logged,
                "model_version": routed.served.version.label,
                "variant": routed.variant,
                "score": value,
                "prepared": predictor.prepared,
            }

        return router


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    query: str = Field(min_length=1, max_length=1000)
    version: str | None = None
    user_id: str | None = None


class FakePredictor:
    """Scores a query: the model's skill plus the query's fixed offset."""

    def __init__(self, skill: float) -> None:
        self.skill = skill
        self.prepared = False

    def prepare_for_serving(self, settings: Settings) -> None:
        self.prepared = True

    def score(self, query: str) -> float:
        return self.skill + _offset(query)


class LossFakeTask(FakeTask):
    """The same task judged by a loss: `error` = 1 - score, lower is better. A gate or a
    search that assumed "higher is better" would pick the worse model here."""

    name = "fake-loss"
    primary_metric = "error"
    greater_is_better = False

    def evaluate(self, model: str, snapshot: Path, split: str = "test") -> Evaluation:
        scored = super().evaluate(model, snapshot, split)
        errors = [1.0 - score for score in scored.per_example]
        mean = sum(errors) / len(errors) if errors else 1.0
        return Evaluation(
            metrics={"error": mean}, primary="error", per_example=errors, higher_is_better=False
        )

    def train(
        self, snapshot: Path, base_model: str, config: BaseModel, out_dir: Path, sink: ProgressSink
    ) -> Path:
        model = super().train(snapshot, base_model, config, out_dir, sink)
        assert isinstance(config, FakeConfig)
        sink.metric("eval_error", config.steps, 1.0 - skill_of(str(model)))
        return model


def _examples(data: ProjectData) -> list[dict[str, Any]]:
    return [
        {"query": str(record.input), "item": item, "feedback_id": record.id}
        for record in data.feedback
        if record.kind == "label"
        for item in record.payload.get("items") or []
    ]
