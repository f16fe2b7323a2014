"""Serving, shared by every task family: which version answers (the champion, a named
version, a rollout variant: state.py, rollouts/routing.py), models loaded in the background
(models.py), interaction logging (interactions.py), calibration storage (calibration.py).
What a family serves (embedding: search and select over an index; generation: chat) lives
in its task folder and plugs in through `Task.serving` and `Task.routes` (family.py).

The state lives on `app.state.serving`, made on first use so an app that never serves loads
no model. The hooks below are what other routes call after they store something serving
depends on; each is a no-op while nothing is served.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from fineloop.serving.state import ServingState

_CREATE = threading.Lock()

__all__ = ["ServingState", "champion_changed", "feedback_changed", "get_serving", "items_changed"]


def get_serving(app: Any) -> ServingState:
    """The app's serving state, created on first use."""
    found: ServingState | None = getattr(app.state, "serving", None)
    if found is None:
        with _CREATE:
            found = getattr(app.state, "serving", None)
            if found is None:
                found = ServingState(app.state.store, app.state.settings)
                app.state.serving = found
    return found


def _existing(app: Any) -> ServingState | None:
    found: ServingState | None = getattr(app.state, "serving", None)
    return found


def items_changed(app: Any, project: str, item_ids: Iterable[str] | None = None) -> None:
    """After items were upserted: cached indexes re-embed them before their next search
    (`None`: ids unknown, e.g. a file import; the indexes resync with the store); a project
    not served yet has its champion's index built in the background."""
    state = _existing(app)
    if state is not None:
        state.items_changed(project, None if item_ids is None else list(item_ids))


def feedback_changed(app: Any, project: str) -> None:
    """After feedback was stored: the next search reads it into the adaptation memory."""
    triggers = getattr(app.state, "triggers", None)
    if triggers is not None:  # training triggers count feedback: check them soon
        triggers.poke(project)
    state = _existing(app)
    if state is not None:
        state.feedback_changed(project)


def champion_changed(app: Any, project: str) -> None:
    """After a promotion or rollback: get the new champion ready now (embedding: build its
    index) rather than at the next request (which would otherwise notice and do the same)."""
    state = _existing(app)
    if state is not None:
        state.prepare(project)
