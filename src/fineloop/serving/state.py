"""`ServingState`: what one process shares across every family it serves — the store, the
background worker, the loaded models (models.py), the live rollouts — and each family's own
serving state (`Task.serving`), made on first use.

Requests resolve their version here (`serve`: the champion or a named version, checked to
belong to a project of the route's task) through the routing cache (routing_cache.py: no
store read per request while nothing changed); rollouts/routing.py adds the variant a user
is assigned to. The hooks (`feedback_changed`, `items_changed`, `prepare`) reach the family
of the project they concern. Nothing here imports torch until a model is loaded.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from typing import Any

from fineloop.config import Settings
from fineloop.errors import FineloopError
from fineloop.registry.versions import CHAMPION
from fineloop.rollouts.live import LiveRollouts
from fineloop.serving.background import Background
from fineloop.serving.family import Served, TaskServing
from fineloop.serving.models import ModelCache
from fineloop.serving.routing_cache import RoutingCache
from fineloop.serving.versions import ProjectRef, VersionRef, check_task, served_version
from fineloop.store import Store
from fineloop.store.projects import get_project
from fineloop.tasks import get_task
from fineloop.threads import passive_for_serving


class ServingState:
    def __init__(self, store: Store, settings: Settings) -> None:
        if "torch" not in sys.modules:  # see fineloop.threads
            passive_for_serving()
        self.store = store
        self.settings = settings
        self.background = Background()  # chores: index builds, resyncs, refits, policies
        self.models = ModelCache(settings)
        self.routing = RoutingCache(store, settings.routing_refresh_seconds)
        self.rollouts = LiveRollouts(store, self.background, self.prepare, self.routing)
        self._lock = threading.Lock()
        self._families: dict[str, TaskServing[Any]] = {}
        self._tasks: dict[str, str] = {}  # project name -> task (a project keeps its task)

    def family(self, task: str) -> TaskServing[Any]:
        """The task family's serving state in this process, made on first use."""
        with self._lock:
            found = self._families.get(task)
        if found is not None:
            return found
        made = get_task(task).serving(self)
        with self._lock:
            return self._families.setdefault(task, made)

    def serve(self, name: str, ref: str | None = None, *, task: str | None = None) -> Served[Any]:
        """The version that answers a request to the project (`ref` None: the champion),
        ready; `task`: the route serves only projects of this task (422 otherwise)."""
        project, version = self.resolve(name, ref, task=task)
        champion = ref is None or ref == CHAMPION
        return self.family(project.task).serve(project, version, champion=champion)

    def resolve(
        self, name: str, ref: str | None = None, *, task: str | None = None
    ) -> tuple[ProjectRef, VersionRef]:
        """`served_version` through the routing cache: the project and the version `ref`
        names (None: the champion) as of at most `routing_refresh_seconds` ago, or as of
        this process's own last change."""
        ref = None if ref == CHAMPION else ref
        project, version = self.routing.get(
            ("version", name, ref), lambda: served_version(self.store, name, ref, task=task)
        )
        check_task(project, task)  # a hit may have been loaded by another task's route
        return project, version

    def prepare(self, name: str) -> None:
        """The champion moved (or will be asked for soon): its family gets it ready."""
        try:
            project, version = served_version(self.store, name, None)
        except FineloopError:  # gone, or a base model that fails: the next request says so
            return
        self.family(project.task).prepare(project, version)

    def feedback_changed(self, project: str) -> None:
        family = self._family_of(project)
        if family is not None:
            family.feedback_changed(project)
        self.rollouts.feedback_arrived(project)

    def items_changed(self, project: str, item_ids: Iterable[str] | None) -> None:
        family = self._family_of(project)
        if family is not None:
            family.items_changed(project, item_ids)

    def _family_of(self, project: str) -> TaskServing[Any] | None:
        with self._lock:
            task = self._tasks.get(project)
        if task is None:
            try:
                with self.store.read() as session:
                    task = get_project(session, project).task
            except FineloopError:
                return None
            with self._lock:
                self._tasks[project] = task
        try:
            return self.family(task)
        except FineloopError:  # a task no longer installed: nothing here serves it
            return None
