"""Panels a task family adds to the shared pages, found through the project's task.

The shared pages stay family-blind: each asks the project's task (`Task.panels`) for an
optional panel (a template and the data it renders) and includes it when there is one. A
family's templates live in its own folder and load under its task name ("ner/job.html"),
so two families never clash; inside that folder they import each other as "./name.html".
A family that fails to load (a broken plugin, a missing extra) shows the shared pages only,
and the log says why: a plugin never turns a page into a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PrefixLoader,
    Template,
    select_autoescape,
)
from sqlalchemy.orm import Session

from fineloop.jobs.store import TRAIN
from fineloop.store.schema import Job, Project
from fineloop.tasks import available, get_task

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Panels:
    """What a family shows on the dashboard: templates in its folder `templates` (each
    defines the macros the shared page calls: `top` and `after_models` on the project page,
    `top` and `bottom` on a training job's page) and the functions giving their data."""

    templates: Path
    project_template: str
    project: Callable[[Session, Project, int], dict[str, Any]]
    job_template: str
    job: Callable[[Session, Job], dict[str, Any]]


@cache
def panels_of(task: str) -> Panels | None:
    """The panels of the installed family `task`, asked once per process."""
    try:
        return get_task(task).panels()
    except Exception:
        log.exception("the dashboard shows no panel for task %r: loading it failed", task)
        return None


def project_panel(session: Session, project: Project, page: int) -> dict[str, Any] | None:
    """The family's panel for the project page (`page`: which page of its lists)."""
    panels = panels_of(project.task)
    if panels is None:
        return None
    data = _safely(project.task, panels.project, session, project, page)
    if data is None:
        return None
    return {"template": f"{project.task}/{panels.project_template}"} | data


def job_panel(session: Session, project: Project | None, job: Job) -> dict[str, Any] | None:
    """The family's panel for a training job's page."""
    if project is None or job.kind != TRAIN:
        return None
    panels = panels_of(project.task)
    if panels is None:
        return None
    data = _safely(project.task, panels.job, session, job)
    if data is None:
        return None
    return {"template": f"{project.task}/{panels.job_template}"} | data


def _safely(task: str, panel: Callable[..., T], *args: Any) -> T | None:
    """A panel's data, or None (logged) when the family's code fails: the shared page
    still renders. Callers ask for the panel last, after the page's own reads."""
    try:
        return panel(*args)
    except Exception:
        log.exception("the %r panel failed; the page shows without it", task)
        return None


class FamilyFolders(Mapping[str, BaseLoader]):
    """Task name -> a loader of its panel templates, resolved on first use, so the
    dashboard imports no family before one of its pages is shown."""

    def __init__(self) -> None:
        self._loaders: dict[Path, FileSystemLoader] = {}

    def __getitem__(self, task: str) -> BaseLoader:
        panels = panels_of(task)
        if panels is None:
            raise KeyError(task)
        if panels.templates not in self._loaders:
            self._loaders[panels.templates] = FileSystemLoader(panels.templates)
        return self._loaders[panels.templates]

    def __iter__(self) -> Iterator[str]:
        return iter([task for task in available() if panels_of(task) is not None])

    def __len__(self) -> int:
        return sum(1 for _ in self)


class FamilyLoader(PrefixLoader):
    """A PrefixLoader that compiles a family's template under its full name
    ("generation/project.html", where PrefixLoader would say "project.html"), so its
    "./" imports resolve in its own folder."""

    def load(
        self,
        environment: Environment,
        name: str,
        globals: MutableMapping[str, Any] | None = None,
    ) -> Template:
        return BaseLoader.load(self, environment, name, globals)


class DashboardEnvironment(Environment):
    """Jinja with family-relative imports: "./common.html" inside "generation/project.html"
    is "generation/common.html", so a family's templates never spell its installed name."""

    def join_path(self, template: str, parent: str) -> str:
        if template.startswith("./") and "/" in parent:
            return parent.rsplit("/", 1)[0] + template[1:]
        return template


def environment(shared: Path) -> Environment:
    """The dashboard's templates: the shared folder, then every family's under its name."""
    return DashboardEnvironment(
        loader=ChoiceLoader([FileSystemLoader(shared), FamilyLoader(FamilyFolders())]),
        autoescape=select_autoescape(),
    )
