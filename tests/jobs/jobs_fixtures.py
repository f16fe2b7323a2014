"""Fixtures for job tests: the fake task installed as a plugin, projects that use it.

The fake registers the way any third-party task does, through a `fineloop.tasks` entry
point (a dist-info folder on the path), so child processes that run jobs find it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from jobs_fake_task import make_model

from fineloop import tasks
from fineloop.feedback.events import LabelEvent
from fineloop.operations import store_feedback
from fineloop.policies import TrainingPolicy
from fineloop.schemas import ProjectCreate
from fineloop.store import Store
from fineloop.store.projects import create_project, get_project

HERE = Path(__file__).resolve().parent

QUERIES = [f"query number {i}" for i in range(18)]


@pytest.fixture
def fake_plugin() -> Iterator[None]:
    """The fake task families, installed for the whole suite by tests/conftest.py
    (tests/plugins holds their entry points); here only checked."""
    tasks.available.cache_clear()
    assert {"fake", "fake-loss"} <= set(tasks.available()), "tests/plugins is not on the path"
    yield


MakeProject = Callable[..., str]


@pytest.fixture
def fake_project(store: Store, tmp_path: Path, fake_plugin: None) -> MakeProject:
    """make(name, examples=18, skill=0.5, **policy) -> a fake-task project with label events."""

    def make(
        name: str = "fakep",
        examples: int = len(QUERIES),
        skill: float = 0.5,
        task: str = "fake",
        **policy: object,
    ) -> str:
        base = make_model(tmp_path / f"{name}-base", skill)
        spec = ProjectCreate(
            name=name,
            task=task,
            base_model=str(base),
            training_policy=TrainingPolicy.model_validate({"bootstrap_samples": 200, **policy}),
        )
        with store.write() as session:
            create_project(session, spec)
        events = [
            LabelEvent(kind="label", input=q, items=[f"item-{i}"]) for i, q in enumerate(QUERIES)
        ]
        if examples:
            store_feedback(store, name, events[:examples])
        return name

    return make


def project_id(store: Store, name: str) -> int:
    with store.read() as session:
        return get_project(session, name).id
