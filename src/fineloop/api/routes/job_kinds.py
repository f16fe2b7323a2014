"""Jobs besides training: build a snapshot, evaluate a version (202 at once; a worker runs
them). Follow them like any job: `GET /v1/jobs/{id}`, its events and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status
from pydantic import BaseModel, Field

from fineloop.api.deps import Admin, StoreDep
from fineloop.api.responses import CHANGE, KEYED
from fineloop.jobs import store as jobs
from fineloop.jobs.kinds import queue_evaluation, queue_snapshot_build
from fineloop.store.schema import Job
from fineloop.validation import INPUT

router = APIRouter(tags=["jobs"], dependencies=[Admin], responses=KEYED)


class SnapshotBuild(BaseModel):
    """What `POST /v1/projects/{project}/snapshots/build` takes; every field is optional."""

    model_config = INPUT

    seed: int | None = Field(
        default=None,
        ge=0,
        le=2**31 - 1,
        description="Seed for the split; default: the project's training policy seed.",
    )


class EvaluateRequest(BaseModel):
    """What `POST /v1/projects/{project}/evaluate` takes; every field is optional."""

    model_config = INPUT

    version: str = Field(
        default="champion",
        min_length=1,
        max_length=64,
        description="Version to evaluate: an alias (champion, challenger, ...) or a number "
        "(v3 or 3), resolved when the job runs.",
    )
    snapshot: str | None = Field(
        default=None,
        min_length=8,
        max_length=64,
        description="Snapshot id (or unique prefix of 8+ characters) whose test split to use; "
        "default: the project's latest snapshot when the job runs (built if there is none).",
    )


@router.post(
    "/v1/projects/{project}/snapshots/build",
    status_code=status.HTTP_202_ACCEPTED,
    responses=CHANGE,
)
def build_snapshot(
    project: str, store: StoreDep, request: Request, body: SnapshotBuild | None = None
) -> dict[str, Any]:
    """Queue a build of the project's snapshot; the job's result names it. 409 (with
    `job_id`) while a build is queued or running."""
    job = queue_snapshot_build(store, project, seed=(body or SnapshotBuild()).seed)
    return _queued(store, request, job)


@router.post(
    "/v1/projects/{project}/evaluate", status_code=status.HTTP_202_ACCEPTED, responses=CHANGE
)
def evaluate(
    project: str, store: StoreDep, request: Request, body: EvaluateRequest | None = None
) -> dict[str, Any]:
    """Queue an evaluation of a version on a snapshot's test split; the job's result holds
    the metrics. 404 for an unknown version or snapshot."""
    wanted = body or EvaluateRequest()
    job = queue_evaluation(store, project, version=wanted.version, snapshot=wanted.snapshot)
    return _queued(store, request, job)


def _queued(store: StoreDep, request: Request, job: Job) -> dict[str, Any]:
    worker = getattr(request.app.state, "worker", None)
    if worker is not None:
        worker.wake()
    with store.read() as session:
        return jobs.job_public(session, jobs.get_job(session, job.id))
