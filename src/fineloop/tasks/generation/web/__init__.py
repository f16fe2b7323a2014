"""The dashboard panels of a generation project (its interactions with their feedback, a
run's methods, replies side by side), found by the dashboard through `GenerationTask.panels`."""

from __future__ import annotations

from pathlib import Path

from fineloop.tasks.generation.web import job, project
from fineloop.web.families import Panels

PANELS = Panels(
    templates=Path(__file__).resolve().parent / "templates",
    project_template="project.html",
    project=project.project_panel,
    job_template="job.html",
    job=job.job_panel,
)
