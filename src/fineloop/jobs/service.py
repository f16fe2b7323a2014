"""Starting a training job, as the API and the CLI both do: check first, then queue.

Whatever can be refused cheaply is refused here, before a job exists: an unknown task, bad
config overrides (422 naming the field), too few examples when the task can count them
without building (422 "needs N, has M"), or a training job already active (409 naming it).
"""

from __future__ import annotations

from typing import Any

from fineloop.data import read_project
from fineloop.jobs import store as jobs
from fineloop.jobs.distributed import launch_options
from fineloop.store import Store
from fineloop.store.projects import get_project, training_policy_of
from fineloop.store.schema import Job
from fineloop.tasks import get_task


def start_training(
    store: Store,
    project_name: str,
    overrides: dict[str, Any] | None = None,
    *,
    claimed_by: str | None = None,
    nproc: int | None = None,
    launcher: str | None = None,
) -> Job:
    """Validate and create a training job: queued for a worker, or running in `claimed_by`.
    `nproc`/`launcher`: train on that many processes (else the worker's settings decide)."""
    overrides = dict(overrides or {})
    launch = launch_options(nproc, launcher)  # raises Invalid on a bad value
    with store.read() as session:
        project = get_project(session, project_name)
    task = get_task(project.task)
    policy = training_policy_of(project)
    task.train_config({**policy.train, **overrides})  # raises Invalid on a bad override
    task.check_trainable(read_project(store, project))
    with store.write() as session:
        project = get_project(session, project_name)
        return jobs.create_job(
            session,
            project,
            jobs.TRAIN,
            {"overrides": overrides} | ({"launch": launch} if launch else {}),
            claimed_by=claimed_by,
            max_attempts=policy.max_attempts,
        )
