"""Which model version serves a project, and v0 for projects that have none yet.

Traffic goes to the `champion` alias. A project without any version gets v0 — its base model
(the project's `base_model`, else its task's default) —
aliased champion, in one transaction (`registry.bootstrap.ensure_base_version`, shared with
training); two processes racing to do it both end up reading the same v0.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fineloop.errors import Invalid, NotFound
from fineloop.policies import ServingPolicy
from fineloop.registry.bootstrap import ensure_base_version
from fineloop.registry.versions import CHAMPION, resolve
from fineloop.store import Store
from fineloop.store.projects import get_project, serving_policy_of
from fineloop.store.schema import Alias, ModelVersion, Project
from fineloop.tasks import get_task


@dataclass(frozen=True)
class VersionRef:
    """A model version as serving knows it: store id, number and where its weights are."""

    id: int
    number: int
    artifact_uri: str

    @property
    def label(self) -> str:
        return f"v{self.number}"


@dataclass(frozen=True)
class ProjectRef:
    """What serving needs of a project, read once per request."""

    id: int
    name: str
    task: str
    policy: ServingPolicy


def served_version(
    store: Store, name: str, ref: str | None, *, task: str | None = None
) -> tuple[ProjectRef, VersionRef]:
    """The project and the version a request should use (`ref` None: the champion).
    `task`: the route serves projects of that task only (422 for another)."""
    if ref == CHAMPION:
        ref = None
    with store.read() as session:
        project = get_project(session, name)
        found = _project_ref(project)
        check_task(found, task)
        fresh = session.get(Alias, (project.id, CHAMPION)) is None
        version = None if fresh else _lookup(session, project, ref)
    if version is None:
        # A project never served nor trained: v0 first, then the reference (v0, 0) resolves.
        version = ensure_champion(store, name)
        if ref is not None:
            with store.read() as session:
                version = _ref(resolve(session, get_project(session, name), ref))
    return found, version


def check_task(project: ProjectRef, task: str | None) -> None:
    """422 unless the route serving `task` projects (None: any) may serve this one."""
    if task is not None and project.task != task:
        raise Invalid(
            f"project {project.name!r} is a {project.task!r} project; this route serves "
            f"{task!r} projects only",
            field="project",
        )


def ensure_champion(store: Store, name: str) -> VersionRef:
    """The champion, registering v0 (the base model) with the alias first if missing."""
    for _attempt in range(3):
        try:
            with store.write() as session:
                project = get_project(session, name)
                ensure_base_version(session, project, get_task(project.task))
                champion = _lookup(session, project, None)
                if champion is not None:
                    return champion
        except IntegrityError:
            continue  # another process registered it at the same moment: read theirs
    raise NotFound(f"project {name!r} has no champion version; promote one", field="version")


def _lookup(session: Session, project: Project, ref: str | None) -> VersionRef | None:
    if ref is not None:
        return _ref(resolve(session, project, ref))  # unknown: NotFound (404)
    alias = session.get(Alias, (project.id, CHAMPION))
    if alias is None:
        return None
    version = session.get(ModelVersion, alias.version_id)
    return None if version is None else _ref(version)


def _ref(version: ModelVersion) -> VersionRef:
    return VersionRef(id=version.id, number=version.number, artifact_uri=version.artifact_uri)


def _project_ref(project: Project) -> ProjectRef:
    return ProjectRef(project.id, project.name, project.task, serving_policy_of(project))
