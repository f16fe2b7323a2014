"""Fixtures for job tests: the fake task installed as a plugin, projects that use it.

The fake registers the way any third-party task does, through a `fineloop.tasks` entry
point (a dist-info folder on the path), so child processes that run jobs find it too.
"""

from __future__ import annotations

import os
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
def fake_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Install the fake task under the name `fake`, here and for child processes."""
    site = tmp_path / "plugin-site"
    info = site / "fineloop_fake_task-0.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fineloop-fake-task\nVersion: 0.0.1\n"
    )
    (info / "entry_points.txt").write_text("[fineloop.tasks]\nfake = jobs_fake_task:FakeTask\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(HERE))
    paths = [str(site), str(HERE), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    tasks.available.cache_clear()
    yield
    tasks.available.cache_clear()


MakeProject = Callable[..., str]


@pytest.fixture
def fake_project(store: Store, tmp_path: Path, fake_plugin: None) -> MakeProject:
    """make(name, examples=18, skill=0.5, **policy) -> a fake-task project with label events."""

    def make(
        name: str = "fakep", examples: int = len(QUERIES), skill: float = 0.5, **policy: object
    ) -> str:
        base = make_model(tmp_path / f"{name}-base", skill)
        spec = ProjectCreate(
            name=name,
            task="embedding",
            base_model=str(base),
            training_policy=TrainingPolicy.model_validate({"bootstrap_samples": 200, **policy}),
        )
        with store.write() as session:
            create_project(session, spec).task = "fake"  # the schema lists built-in tasks only
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
