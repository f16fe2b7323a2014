"""What a task family serves with, behind the shared routing.

The shared part of serving (state.py, rollouts/routing.py, interactions.py) resolves which
version answers a request — the champion, a version named in the request, or the rollout
variant the user is assigned to — and logs the interaction. A family only says how to get
a version ready to answer (`TaskServing`): embedding builds an index per version; a family
that needs nothing beyond its model uses `PredictorServing`, whose resource is the loaded
predictor. `Task.serving(hub)` returns one per process.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from fineloop.serving.versions import ProjectRef, VersionRef
from fineloop.tasks.base import Predictor

if TYPE_CHECKING:
    from fineloop.serving.state import ServingState

R = TypeVar("R")


@dataclass(frozen=True)
class Served(Generic[R]):
    """Everything one request uses, fixed at its start: the project, the version that
    answers, and the family's resource for that version (a predictor, an index slot)."""

    project: ProjectRef
    version: VersionRef
    resource: R


class TaskServing(Protocol[R]):
    """A family's per-process serving state. Each hook is called by the shared plumbing;
    a family with nothing to do in one leaves it empty."""

    def serve(self, project: ProjectRef, version: VersionRef, *, champion: bool) -> Served[R]:
        """The version ready to answer, waiting at most `serving_wait_seconds` for it
        (then `NotReady`: 503 + Retry-After). `champion`: the request asked for the
        champion, so a family may keep answering with the previous one while the new
        champion gets ready (the returned `version` says which answered)."""
        ...

    def serve_ready(self, project: ProjectRef, version: VersionRef) -> Served[R] | None:
        """A rollout variant's version if it is ready now; else None (the champion
        answers) and it gets ready in the background."""
        ...

    def prepare(self, project: ProjectRef, champion: VersionRef) -> None:
        """The champion moved (or the project is about to be served): get it ready in the
        background."""
        ...

    def feedback_changed(self, project: str) -> None:
        """Feedback was stored for the project (instant adaptation reads it)."""
        ...

    def items_changed(self, project: str, item_ids: Iterable[str] | None) -> None:
        """Catalog items were upserted (None: which ones is unknown)."""
        ...


class PredictorServing:
    """Serving for a family whose model is all it needs: the resource is the predictor,
    loaded in the background (models.py) and shared by every request to that version."""

    def __init__(self, hub: ServingState) -> None:
        self.hub = hub
        self._active: dict[int, VersionRef] = {}  # per project: the champion last served

    def serve(
        self, project: ProjectRef, version: VersionRef, *, champion: bool
    ) -> Served[Predictor]:
        models = self.hub.models
        if champion:  # a new champion loads while the previous one keeps answering
            active = self._active.get(project.id)
            if active is not None and active.id != version.id and models.loaded(version) is None:
                previous = models.loaded(active)
                if previous is not None:
                    models.start(version, project.task)
                    return Served(project, active, previous)
        predictor = models.ready(version, project.task)
        if champion:
            self._active[project.id] = version
        return Served(project, version, predictor)

    def serve_ready(self, project: ProjectRef, version: VersionRef) -> Served[Predictor] | None:
        found = self.hub.models.loaded(version)
        if found is None:
            self.hub.models.start(version, project.task)
            return None
        return Served(project, version, found)

    def prepare(self, project: ProjectRef, champion: VersionRef) -> None:
        self.hub.models.start(champion, project.task)

    def feedback_changed(self, project: str) -> None:
        pass

    def items_changed(self, project: str, item_ids: Iterable[str] | None) -> None:
        pass
