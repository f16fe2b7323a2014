"""Panels a task family adds to the shared pages, keyed by the project's task name.

The shared pages stay family-blind: each asks here for an optional panel (a template and
the data it renders) and includes it when there is one. A family without an entry shows
the shared pages only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from fineloop.jobs.store import TRAIN
from fineloop.store.schema import Job, Project
from fineloop.web import generation_job, generation_project


@dataclass(frozen=True)
class Panels:
    project_template: str
    project: Callable[[Session, Project, int], dict[str, Any]]
    job_template: str
    job: Callable[[Session, Job], dict[str, Any]]


PANELS: dict[str, Panels] = {
    "generation": Panels(
        "family_generation_project.html",
        generation_project.project_panel,
        "family_generation_job.html",
        generation_job.job_panel,
    ),
}


def project_panel(session: Session, project: Project, page: int) -> dict[str, Any] | None:
    """The family's panel for the project page (`page`: which page of its lists)."""
    panels = PANELS.get(project.task)
    if panels is None:
        return None
    return {"template": panels.project_template} | panels.project(session, project, page)


def job_panel(session: Session, project: Project | None, job: Job) -> dict[str, Any] | None:
    """The family's panel for a training job's page."""
    panels = PANELS.get(project.task) if project is not None else None
    if panels is None or job.kind != TRAIN:
        return None
    return {"template": panels.job_template} | panels.job(session, job)
