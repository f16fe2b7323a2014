"""Training jobs: start one (202 at once; the server's worker runs it), follow it, cancel it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from pydantic import BaseModel, Field

from fineloop.api.deps import Admin, StoreDep
from fineloop.api.responses import CHANGE, CONFLICT, KEYED
from fineloop.jobs import store as jobs
from fineloop.jobs.events_stream import event_stream
from fineloop.jobs.service import start_training
from fineloop.store.projects import get_project
from fineloop.validation import INPUT, JsonObject

router = APIRouter(tags=["jobs"], dependencies=[Admin], responses=KEYED)
JobId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Job id.")]
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class TrainRequest(BaseModel):
    """What `POST /v1/projects/{project}/train` takes; every field is optional."""

    model_config = INPUT

    overrides: JsonObject = Field(
        default_factory=dict,
        description="Training config values for this run only, over the project's training "
        'policy (e.g. {"epochs": 1, "loss": "cosent"}); validated before the job is queued.',
    )
    nproc: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Train on this many processes of one machine (DDP; gloo on CPU, nccl on "
        "GPU); default: the worker's `train_nproc` setting.",
    )
    launcher: str | None = Field(
        default=None,
        description="How to start several processes: torchrun or accelerate; default: the "
        "worker's `train_launcher` setting.",
    )


@router.post("/v1/projects/{project}/train", status_code=status.HTTP_202_ACCEPTED, responses=CHANGE)
def train(
    project: str, store: StoreDep, request: Request, body: TrainRequest | None = None
) -> dict[str, Any]:
    """Queue a training job and return it at once; poll `GET /v1/jobs/{id}`.

    409 (with `job_id`) while the project has a training job queued or running; 422 for a
    bad override or too few examples."""
    body = body or TrainRequest()
    job = start_training(store, project, body.overrides, nproc=body.nproc, launcher=body.launcher)
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


@router.get(
    "/v1/jobs/{job_id}/events",
    response_model=None,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def job_events(
    job_id: JobId,
    store: StoreDep,
    request: Request,
    after: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="Only events after this event id.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    after_metric: Annotated[
        int | None,
        Query(ge=0, le=2**63 - 1, description="Stream only: metric points after this id."),
    ] = None,
    keepalive: Annotated[
        float, Query(ge=1, le=300, description="Stream only: seconds between keep-alives.")
    ] = 15.0,
    last_event_id: Annotated[
        str | None,
        Header(description="Stream only: the `id` of the last message received, to resume."),
    ] = None,
) -> list[dict[str, Any]] | Response:
    """State changes and log lines in order; poll with `after` = the last id seen.

    With `Accept: text/event-stream`: a live stream of the job's events, metric points
    (`event: metric`) and progress, resumable with `Last-Event-ID`, that ends once the job
    is final (see fineloop.jobs.events_stream)."""
    with store.read() as session:
        jobs.get_job(session, job_id)
        if "text/event-stream" not in request.headers.get("accept", ""):
            return [
                jobs.event_public(e) for e in jobs.events(session, job_id, after=after, limit=limit)
            ]
    return event_stream(store, request, job_id, after, after_metric, keepalive, last_event_id)


@router.post("/v1/jobs/{job_id}/cancel", responses=CONFLICT)
def cancel(job_id: JobId, store: StoreDep) -> dict[str, Any]:
    """A queued job is cancelled at once; a running one within seconds (poll its state).
    409 for a job that already succeeded or failed."""
    with store.write() as session:
        job = jobs.request_cancel(session, job_id)
        return jobs.job_public(session, job)
