"""Projects: one use case each, with its task, base model and reward policy."""

from __future__ import annotations

from fastapi import APIRouter, status

from fineloop import base_models
from fineloop.api.deps import Admin, SettingsDep, StoreDep
from fineloop.api.responses import CHANGE, KEYED
from fineloop.feedback.stats import Bucket, reward_stats
from fineloop.schemas import ProjectCreate, ProjectPublic, ProjectUpdate, RewardStats
from fineloop.store.projects import (
    create_project,
    get_project,
    list_projects,
    policy_of,
    project_public,
    update_project,
)
from fineloop.tasks import get_task

router = APIRouter(prefix="/v1/projects", tags=["projects"], dependencies=[Admin], responses=KEYED)


@router.post("", status_code=status.HTTP_201_CREATED, responses=CHANGE)
def create(spec: ProjectCreate, store: StoreDep, settings: SettingsDep) -> ProjectPublic:
    if spec.base_model:
        base_models.check(settings, spec.base_model)  # 422 before anything is stored
    get_task(spec.task).train_config(spec.training_policy.train)  # a typo: 422 naming it
    with store.write() as session:
        return project_public(create_project(session, spec))


@router.get("")
def list_all(store: StoreDep) -> list[ProjectPublic]:
    with store.read() as session:
        return [project_public(p) for p in list_projects(session)]


@router.get("/{project}")
def show(project: str, store: StoreDep) -> ProjectPublic:
    with store.read() as session:
        return project_public(get_project(session, project))


@router.patch("/{project}", responses=CHANGE)
def update(
    project: str, change: ProjectUpdate, store: StoreDep, settings: SettingsDep
) -> ProjectPublic:
    """Change the project; a new reward policy recomputes every stored reward."""
    if change.base_model:
        base_models.check(settings, change.base_model)
    with store.write() as session:
        if change.training_policy is not None:  # a typo is a 422 now, not a failed job later
            get_task(get_project(session, project).task).train_config(change.training_policy.train)
        return project_public(update_project(session, project, change))


@router.get("/{project}/stats")
def stats(project: str, store: StoreDep, bucket: Bucket = "day") -> RewardStats:
    """Counts by kind, a histogram of effective rewards and a time series."""
    with store.read() as session:
        found = get_project(session, project)
        return reward_stats(session, found.id, policy_of(found), bucket=bucket)
