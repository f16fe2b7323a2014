"""The dashboard panels of a NER project (texts with their spans and the corrections on
them, entity scores per type, held-out texts side by side), found by the dashboard through
`NerTask.panels`."""

from __future__ import annotations

from pathlib import Path

from fineloop.tasks.ner.web import job, project
from fineloop.web.families import Panels

PANELS = Panels(
    templates=Path(__file__).resolve().parent / "templates",
    project_template="project.html",
    project=project.project_panel,
    job_template="job.html",
    job=job.job_panel,
)
