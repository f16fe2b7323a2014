"""The one shape every task has: build → train → evaluate → load.

The loop (jobs, registry, serving) only talks to a task through `Task`, so adding a task
family never adds a branch there. Tasks register under the `fineloop.tasks` entry point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from fineloop.config import Settings
from fineloop.store import Store
from fineloop.store.schema import Project


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


@dataclass(frozen=True)
class BuiltSnapshot:
    """A dataset written to `path`; `id` is the hash of its content (and project)."""

    id: str
    path: Path
    splits: dict[str, int]
    stats: dict[str, Any]
    config: dict[str, Any]
    feedback_watermark: int


@dataclass(frozen=True)
class Evaluation:
    """Metrics on one split, plus the primary metric per example (in the split's order),
    so two models evaluated on the same split can be compared with a paired bootstrap."""

    metrics: dict[str, float]
    primary: str
    per_example: list[float] = field(default_factory=list)


class Task(Protocol):
    name: str
    primary_metric: str

    def default_base_model(self) -> str: ...

    def train_config(self, overrides: dict[str, Any]) -> BaseModel:
        """The task's training config with the project's overrides, validated."""
        ...

    def build(
        self,
        store: Store,
        settings: Settings,
        project: Project,
        out_dir: Path,
        *,
        seed: int,
        **options: Any,
    ) -> BuiltSnapshot:
        """Turn the project's feedback (and items) into a dataset written under out_dir;
        `options` are the task's own build settings."""
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

    def load(self, model: str) -> Any:
        """What serving calls: a predictor for the model at this path (or hub id)."""
        ...
