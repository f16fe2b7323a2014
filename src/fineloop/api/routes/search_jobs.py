"""Hyperparameter search jobs: start one (202 at once; the server's worker runs it).

The route is `/tune`: `/search` of a project is its model serving a query.

The search job and its trials (child jobs of kind `trial`) are followed, listed and
cancelled through the job routes like any job.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status

from fineloop.api.deps import Admin, StoreDep
from fineloop.api.responses import CHANGE, KEYED
from fineloop.jobs import store as jobs
from fineloop.jobs.search_space import SearchConfig, start_search

router = APIRouter(tags=["jobs"], dependencies=[Admin], responses=KEYED)


@router.post("/v1/projects/{project}/tune", status_code=status.HTTP_202_ACCEPTED, responses=CHANGE)
def tune(
    project: str, store: StoreDep, request: Request, body: SearchConfig | None = None
) -> dict[str, Any]:
    """Queue a hyperparameter search and return its job at once; poll `GET /v1/jobs/{id}`.

    Trials appear as jobs of kind `trial` whose `config.search_job` is this job's id; the
    best trial's model is registered as a version like a training run's. 422 naming the
    field for a bad space or value; 409 (with `job_id`) while the project has a training or
    search job queued or running."""
    job = start_search(store, project, body or SearchConfig())
    worker = getattr(request.app.state, "worker", None)
    if worker is not None:
        worker.wake()
    with store.read() as session:
        return jobs.job_public(session, jobs.get_job(session, job.id))
