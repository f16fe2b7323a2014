"""Projects: create, find, update; a new reward policy recomputes stored rewards."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fineloop.errors import Conflict, NotFound
from fineloop.feedback.rewards import RewardPolicy, stored_reward
from fineloop.policies import ReviewPolicy, ServingPolicy, TrainingPolicy
from fineloop.schemas import ProjectCreate, ProjectPublic, ProjectUpdate
from fineloop.store.schema import Feedback, Project, table
from fineloop.tasks import get_task
from fineloop.validation import read_stored


def create_project(session: Session, spec: ProjectCreate) -> Project:
    now = datetime.now(UTC)
    project = Project(
        name=spec.name,
        task=spec.task,
        base_model=spec.base_model,
        description=spec.description,
        reward_policy=spec.reward_policy.model_dump(mode="json"),
        training_policy=spec.training_policy.model_dump(mode="json"),
        serving_policy=spec.serving_policy.model_dump(mode="json"),
        review_policy=spec.review_policy.model_dump(mode="json"),
        task_options=get_task(spec.task).options(spec.task_options),
        created_at=now,
        updated_at=now,
    )
    if session.scalar(select(Project.id).where(Project.name == spec.name)) is not None:
        raise Conflict(f"project {spec.name!r} already exists", field="name")
    session.add(project)
    try:
        session.flush()
    except IntegrityError as error:
        raise Conflict(f"project {spec.name!r} already exists", field="name") from error
    return project


def get_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        raise NotFound(f"unknown project {name!r}; create it first or check the name")
    return project


def list_projects(session: Session) -> list[Project]:
    return list(session.scalars(select(Project).order_by(Project.name)))


def policy_of(project: Project) -> RewardPolicy:
    return read_stored(RewardPolicy, project.reward_policy, f"reward_policy of {project.name!r}")


def training_policy_of(project: Project) -> TrainingPolicy:
    return read_stored(
        TrainingPolicy, project.training_policy, f"training_policy of {project.name!r}"
    )


def serving_policy_of(project: Project) -> ServingPolicy:
    return read_stored(ServingPolicy, project.serving_policy, f"serving_policy of {project.name!r}")


def review_policy_of(project: Project) -> ReviewPolicy:
    return read_stored(ReviewPolicy, project.review_policy, f"review_policy of {project.name!r}")


def update_project(session: Session, name: str, change: ProjectUpdate) -> Project:
    project = get_project(session, name)
    if change.base_model is not None:
        project.base_model = change.base_model
    if change.description is not None:
        project.description = change.description
    if change.training_policy is not None:
        project.training_policy = change.training_policy.model_dump(mode="json")
    if change.serving_policy is not None:
        project.serving_policy = change.serving_policy.model_dump(mode="json")
    if change.review_policy is not None:
        project.review_policy = change.review_policy.model_dump(mode="json")
    if change.task_options is not None:
        project.task_options = get_task(project.task).options(change.task_options)
    if change.reward_policy is not None:
        project.reward_policy = change.reward_policy.model_dump(mode="json")
        recompute_rewards(session, project)
    project.updated_at = datetime.now(UTC)
    session.flush()
    return project


def recompute_rewards(session: Session, project: Project) -> int:
    """Rewrite every stored reward of the project under its current policy."""
    policy = policy_of(project)
    rows = session.execute(
        select(Feedback.id, Feedback.kind, Feedback.payload, Feedback.difficulty).where(
            Feedback.project_id == project.id
        )
    ).all()
    changes = [
        {
            "row_id": row.id,
            "new_reward": stored_reward(policy, row.kind, row.payload, row.difficulty),
        }
        for row in rows
    ]
    if changes:
        statement = (
            update(table(Feedback))
            .where(table(Feedback).c.id == bindparam("row_id"))
            .values(reward=bindparam("new_reward"))
        )
        session.connection().execute(statement, changes)
    return len(changes)


def project_public(project: Project) -> ProjectPublic:
    return ProjectPublic(
        name=project.name,
        task=project.task,
        base_model=project.base_model,
        description=project.description,
        reward_policy=policy_of(project),
        training_policy=training_policy_of(project),
        serving_policy=serving_policy_of(project),
        review_policy=review_policy_of(project),
        task_options=dict(project.task_options or {}),
        created_at=project.created_at,
        updated_at=project.updated_at,
    )
