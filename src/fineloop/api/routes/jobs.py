"""Training jobs: start one (202 at once; the server's worker runs it), follow it, cancel it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from fineloop.api.deps import Admin, StoreDep
from fineloop.jobs import store as jobs
from fineloop.jobs.service import start_training
from fineloop.store.projects import get_project

router = APIRouter(tags=["jobs"], dependencies=[Admin])
JobId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Job id.")]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class TrainRequest(BaseModel):
    """What `POST /v1/projects/{project}/train` takes; every field is optional."""

    model_config = ConfigDict(extra="forbid")

    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Training config values for this run only, over the project's training "
        'policy (e.g. {"epochs": 1, "loss": "cosent"}); validated before the job is queued.',
    )


@router.post("/v1/projects/{project}/train", status_code=status.HTTP_202_ACCEPTED)
def train(
    project: str, store: StoreDep, request: Request, body: TrainRequest | None = None
) -> dict[str, Any]:
    """Queue a training job and return it at once; poll `GET /v1/jobs/{id}`.

    409 (with `job_id`) while the project has a training job queued or running; 422 for a
    bad override or too few examples."""
    job = start_training(store, project, (body or TrainRequest()).overrides)
    worker = getattr(request.app.state, "worker", None)
    if worker is not None:
        worker.wake()
    with store.read() as session:
        return jobs.job_public(session, jobs.get_job(session, job.id))


@router.get("/v1/projects/{project}/jobs")
def list_project_jobs(
    project: str,
    store: StoreDep,
    state: Annotated[JobState | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[dict[str, Any]]:
    """The project's jobs, newest first."""
    with store.read() as session:
        found = get_project(session, project)
        rows = jobs.list_jobs(session, found.id, state=state, limit=limit)
        return [jobs.job_public(session, job) for job in rows]


@router.get("/v1/jobs/{job_id}")
def show(job_id: JobId, store: StoreDep) -> dict[str, Any]:
    """State, progress, message, error, result and the version the job registered."""
    with store.read() as session:
        return jobs.job_public(session, jobs.get_job(session, job_id))


@router.get("/v1/jobs/{job_id}/metrics")
def metrics(job_id: JobId, store: StoreDep) -> dict[str, Any]:
    """Metric series by name (training loss per logging step, validation metrics)."""
    with store.read() as session:
        jobs.get_job(session, job_id)
        return {"job_id": job_id, "series": jobs.metric_series(session, job_id)}


@router.get("/v1/jobs/{job_id}/events")
def job_events(
    job_id: JobId,
    store: StoreDep,
    after: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="Only events after this event id.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[dict[str, Any]]:
    """State changes and log lines in order; poll with `after` = the last id seen."""
    with store.read() as session:
        jobs.get_job(session, job_id)
        return [
            jobs.event_public(e) for e in jobs.events(session, job_id, after=after, limit=limit)
        ]


@router.post("/v1/jobs/{job_id}/cancel")
def cancel(job_id: JobId, store: StoreDep) -> dict[str, Any]:
    """A queued job is cancelled at once; a running one within seconds (poll its state).
    409 for a job that already succeeded or failed."""
    with store.write() as session:
        job = jobs.request_cancel(session, job_id)
        return jobs.job_public(session, job)
