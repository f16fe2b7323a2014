"""The contract every task family keeps: build → train → evaluate → load, plus what the
gate, hyperparameter search and serving need from it.

The loop (jobs, registry, serving) only talks to a task through `Task`, so adding a task
family never adds a branch there: a new family is one package plus one entry point in the
`fineloop.tasks` group. `tests/contract/` runs every installed family through the loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel

from fineloop.config import Settings
from fineloop.data.records import ProjectData

if TYPE_CHECKING:
    from fastapi import APIRouter

    from fineloop.feedback.events import EventEnvelope
    from fineloop.policies import ServingPolicy
    from fineloop.schemas import InteractionCreate
    from fineloop.serving.family import TaskServing
    from fineloop.serving.state import ServingState
    from fineloop.web.families import Panels

# An import format a family reads: file bytes → the interactions and feedback it holds.
Converter = Callable[[bytes], "tuple[list[InteractionCreate], list[EventEnvelope]]"]
# What a feedback event was about, when it names an interaction: its input and output.
Shown = tuple[Any, Any]


class JobCancelled(Exception):
    """Raised inside a running step once its cancel was requested: unwind, save nothing."""


class ProgressSink(Protocol):
    """Where a running step reports; the job runner writes it all to the store."""

    def progress(self, fraction: float, message: str = "") -> None: ...

    def metric(self, name: str, step: int, value: float) -> None: ...

    def log(self, message: str) -> None: ...

    def cancelled(self) -> bool: ...


class NullSink:
    """A sink that keeps nothing: for library use and tests that don't watch progress."""

    def progress(self, fraction: float, message: str = "") -> None:
        pass

    def metric(self, name: str, step: int, value: float) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def cancelled(self) -> bool:
        return False


def stop_if_cancelled(sink: ProgressSink, control: Any) -> bool:
    """True once the sink's job was cancelled, after telling a transformers `Trainer`
    (its `TrainerControl`) to stop at once, saving and evaluating nothing more."""
    if not sink.cancelled():
        return False
    control.should_training_stop = True
    control.should_save = False
    control.should_evaluate = False
    return True


@dataclass(frozen=True)
class BuiltSnapshot:
    """A dataset written to `path`; `id` is the hash of its content (and project)."""

    id: str
    path: Path
    splits: dict[str, int]
    stats: dict[str, Any]
    config: dict[str, Any]
    feedback_watermark: int

    @classmethod
    def publish(
        cls,
        out_dir: Path,
        *,
        id: str,
        project: str,
        task: str,
        config: dict[str, Any],
        splits: dict[str, int],
        stats: dict[str, Any],
        feedback_watermark: int,
        **extra: Any,
    ) -> BuiltSnapshot:
        """Write the snapshot's `snapshot.json` (the same keys for every family, plus the
        family's `extra`) and describe it, once its data is on disk."""
        from datetime import UTC, datetime

        from fineloop import __version__
        from fineloop.data.snapshot_io import write_meta

        meta = {"id": id, "project": project, "task": task, "config": config, **extra}
        meta |= {"splits": splits, "stats": stats, "feedback_watermark": feedback_watermark}
        meta |= {"fineloop_version": __version__, "built_at": datetime.now(UTC).isoformat()}
        write_meta(out_dir, meta)
        return cls(id, out_dir, splits, stats, config, feedback_watermark)


@dataclass(frozen=True)
class Evaluation:
    """Metrics on one split, plus the primary metric per example (in the split's order),
    so two models evaluated on the same split can be compared with a paired bootstrap.
    `higher_is_better` is the primary metric's direction (False for a loss or perplexity):
    the gate and hyperparameter search read it rather than assume. `samples` are a few
    held-out examples with the model's own output, for people to read (the dashboard puts
    base, champion and candidate side by side): each {"input", "reference", "output"}, JSON
    values, in the split's order, so two models' samples on one split line up.
    `ratio_parts`, for a primary metric that is a ratio of sums over examples rather than
    their mean (NER's micro F1 = Σ 2·tp / Σ (gold + predicted)): each example's (numerator,
    denominator), in the split's order; the gate then bootstraps the ratio itself."""

    metrics: dict[str, float]
    primary: str
    per_example: list[float] = field(default_factory=list)
    higher_is_better: bool = True
    samples: list[dict[str, Any]] = field(default_factory=list)
    ratio_parts: list[tuple[float, float]] = field(default_factory=list)

    def improvement(self, other: Evaluation) -> float:
        """How much better this primary score is than `other`'s (negative: worse)."""
        ours, theirs = self.metrics[self.primary], other.metrics[other.primary]
        return ours - theirs if self.higher_is_better else theirs - ours


@dataclass(frozen=True)
class Refitted:
    """A model trained once more on train + validation after its candidate passed the gate
    (`Task.refit`): its folder, and what the run was, JSON values the version records
    (at least `epochs` or `max_steps`, and `train_examples`: the rows it trained on)."""

    folder: Path
    summary: dict[str, Any]


@dataclass(frozen=True)
class ReviewEdit:
    """What a reviewer rewrites for one interaction on the review page: `text` to start
    from (the output as the family writes it for people), `hint` on how to write it, and
    `action`, what the page's button says ("edit" or "label"). `Task.review_event` turns
    the rewritten text back into a feedback event."""

    action: str
    text: str
    hint: str


@runtime_checkable
class Predictor(Protocol):
    """What `Task.load` returns: a model ready to answer. Serving calls
    `prepare_for_serving` once, in the background, before the first request reaches it
    (warm-up, an exported graph, a precision probe), so no request pays for it."""

    def prepare_for_serving(self, settings: Settings) -> None: ...


@runtime_checkable
class Task(Protocol):
    """A task family. Every member is required: a family without a search space returns
    {} (HPO then asks the user for one), one that cannot count its examples cheaply makes
    `check_trainable` a no-op, one that adds no API routes returns None from `routes`.
    `TaskDefaults` supplies the "adds nothing" answer for the optional capabilities."""

    name: str
    primary_metric: str
    greater_is_better: bool  # the primary metric's direction, as `Evaluation` reports it

    def default_base_model(self) -> str: ...

    def train_config(self, overrides: dict[str, Any]) -> BaseModel:
        """The task's training config with the project's overrides, validated."""
        ...

    def search_space(self) -> dict[str, dict[str, Any]]:
        """What a hyperparameter search tunes unless told otherwise (the format of
        `fineloop.jobs.search_space.SearchParam`)."""
        ...

    def check_trainable(self, data: ProjectData) -> None:
        """Refuse a training job before it exists (raise `Invalid`) when `build` would
        fail for lack of data, saying how much is needed and how much there is."""
        ...

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
        """Turn the project's records into a dataset written under out_dir. `model_path`
        is the model now serving (the champion, else the base); `options` are the task's
        own build settings."""
        ...

    def train(
        self,
        snapshot: Path,
        base_model: str,
        config: BaseModel,
        out_dir: Path,
        sink: ProgressSink,
    ) -> Path:
        """Fine-tune base_model on the snapshot's train split; save the model to out_dir."""
        ...

    def evaluate(self, model: str, snapshot: Path, split: str = "test") -> Evaluation: ...

    def refit(
        self,
        snapshot: Path,
        base_model: str,
        config: BaseModel,
        trained: Path,
        out_dir: Path,
        sink: ProgressSink,
    ) -> Refitted | None:
        """Train once more from base_model, now on the train and validation splits together,
        with `config` and the length of training the run that made `trained` kept as best
        (read from what it saved), without early stopping; save to out_dir. None: this
        family cannot refit (or that run kept nothing to go by) — it logs why to the sink."""
        ...

    def load(self, model: str) -> Predictor:
        """A predictor for the model at this local path (or hub id)."""
        ...

    def serving(self, hub: ServingState) -> TaskServing[Any]:
        """This family's serving state in one process: how a version gets ready to answer
        (embedding: an index per version). A family whose model is all it needs returns
        `fineloop.serving.family.PredictorServing(hub)`."""
        ...

    def routes(self) -> APIRouter | None:
        """The API routes this family adds (embedding: search, select, embeddings). They
        serve through `fineloop.serving`: `rollouts.routing.route` picks the version and
        `serving.interactions.log_interaction` logs what was shown."""
        ...

    def options(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The project's `task_options` validated, defaults filled in (NER: its entity
        types); raise `Invalid` naming the field. Projects store what this returns."""
        ...

    def check_feedback(
        self, options: Mapping[str, Any], event: EventEnvelope, shown: Shown | None
    ) -> list[tuple[str, str]]:
        """What is wrong with one feedback event before it is stored, as (field, message)
        pairs (a span type the project does not declare, an edit of a span never shown).
        `shown` is the (input, output) of the interaction the event names, if any."""
        ...

    def review_score(
        self, options: Mapping[str, Any], shown: Shown, policy: ServingPolicy
    ) -> float | None:
        """How unsure the model was in one served interaction, from what it showed (higher:
        review it sooner), for the review queue; None when the output tells nothing (the
        queue then orders it by recency). Cheap: no model runs."""
        ...

    def review_answer(self, output: Any) -> Any:
        """The part of a shown output two versions are compared on for the queue's
        `disagreement` ranking (embedding: the top-1 item id), as a JSON value; None when
        the output has no answer to compare."""
        ...

    def review_answers(
        self, model: Path, snapshot: Path, options: Mapping[str, Any], inputs: list[Any]
    ) -> list[Any] | None:
        """What a trained model (its folder) answers to these served inputs, each in the
        `review_answer` form (None for an input it cannot read): a training job records
        its candidate's, so the review queue's `disagreement` ranking finds the inputs
        where champion and candidate part ways. None when the family cannot answer
        cheaply (the default; generation)."""
        ...

    def review_edit(self, options: Mapping[str, Any], shown: Shown) -> ReviewEdit | None:
        """How a reviewer rewrites one served interaction (a reply to edit, spans to fix,
        the right items to name); None when this family's outputs cannot be rewritten."""
        ...

    def review_event(self, options: Mapping[str, Any], shown: Shown, text: str) -> dict[str, Any]:
        """The feedback event a reviewer's rewritten `text` makes: its `kind` and that
        kind's fields (the loop adds the interaction, key and user). Raises `Invalid`
        saying what to fix when the text cannot be read."""
        ...

    def converters(self) -> Mapping[str, Converter]:
        """Import formats this family reads (`fineloop data import --format <name>`), each
        turning a file into interactions and feedback."""
        ...

    def panels(self) -> Panels | None:
        """What this family adds to the dashboard's project and job pages."""
        ...

    def commands(self) -> Mapping[str, Callable[..., Any]]:
        """Typer commands this family adds to the `fineloop` CLI (generation: `generate`)."""
        ...


class TaskDefaults:
    """The optional capabilities of `Task`, answered "none": a family inherits this and
    overrides what it has."""

    def options(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        from fineloop.errors import Invalid

        if raw:
            raise Invalid("this task takes no task_options", field="task_options")
        return {}

    def check_feedback(
        self, options: Mapping[str, Any], event: EventEnvelope, shown: Shown | None
    ) -> list[tuple[str, str]]:
        return []

    def review_score(
        self, options: Mapping[str, Any], shown: Shown, policy: ServingPolicy
    ) -> float | None:
        return None

    def review_answer(self, output: Any) -> Any:
        return output

    def refit(
        self,
        snapshot: Path,
        base_model: str,
        config: BaseModel,
        trained: Path,
        out_dir: Path,
        sink: ProgressSink,
    ) -> Refitted | None:
        sink.log(f"refit: the {getattr(self, 'name', 'this')} family cannot refit")
        return None

    def review_answers(
        self, model: Path, snapshot: Path, options: Mapping[str, Any], inputs: list[Any]
    ) -> list[Any] | None:
        return None

    def review_edit(self, options: Mapping[str, Any], shown: Shown) -> ReviewEdit | None:
        """The output as JSON (a string output as itself): any family can be corrected."""
        output = shown[1]
        if output is None:
            return None
        text = output
        if not isinstance(output, str):
            text = json.dumps(output, indent=2, ensure_ascii=False)
        return ReviewEdit("edit", text, "The output as it should have been, as JSON.")

    def review_event(self, options: Mapping[str, Any], shown: Shown, text: str) -> dict[str, Any]:
        from fineloop.errors import Invalid

        if isinstance(shown[1], str):
            corrected: Any = text
        else:
            try:
                corrected = json.loads(text)
            except ValueError as error:
                raise Invalid(f"the output is not JSON: {error}", field="text") from None
        return {"kind": "correction", "output": corrected}

    def converters(self) -> Mapping[str, Converter]:
        return {}

    def panels(self) -> Panels | None:
        return None

    def commands(self) -> Mapping[str, Callable[..., Any]]:
        return {}
