"""`NerServing`: the shared predictor serving, plus a gazetteer per project for online
adaptation (adapt.py, adapt_memory.py) while the project's `serving_policy.
online_adaptation` is on (the default).

A project's gazetteer is read from the store in the background (`hub.background`): on its
first request, when `feedback_changed` fires (refreshes coalesce: hooks arriving while one
is queued or running cause at most one more), and every `RECHECK_SECONDS` while served
(feedback stored by other processes). A request after a hook in this process waits up to
`HOOK_WAIT_SECONDS` for that refresh, so a correction is applied to the very next request
(read your writes); otherwise requests never wait on the store. Requests read the
gazetteer's immutable view, swapped in whole by a refresh.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fineloop.serving.family import PredictorServing
from fineloop.serving.versions import ProjectRef
from fineloop.tasks.ner.adapt import MEMORY_SCORE, View, merge, model_only
from fineloop.tasks.ner.adapt_memory import SpanMemory

if TYPE_CHECKING:
    from fineloop.serving.state import ServingState

log = logging.getLogger("fineloop.serving")
RECHECK_SECONDS = 5.0
HOOK_WAIT_SECONDS = 2.0
MAX_PROJECTS = 64


class _Slot:
    """One project's gazetteer and the state of its refreshes."""

    def __init__(self, project_id: int) -> None:
        self.memory = SpanMemory(project_id)
        self.lock = threading.Lock()
        self.idle = threading.Event()
        self.idle.set()
        self.queued = False
        self.stale = False
        self.hooked = False  # a hook of this process asked for the pending refresh
        self.checked_at = -RECHECK_SECONDS


class NerServing(PredictorServing):
    """Predictor serving whose spans are adapted at once by users' corrections."""

    def __init__(self, hub: ServingState, memory_score: float = MEMORY_SCORE) -> None:
        super().__init__(hub)
        self.memory_score = memory_score
        self._lock = threading.Lock()
        self._slots: OrderedDict[int, _Slot] = OrderedDict()
        self._names: dict[str, int] = {}

    def extract(
        self, project: ProjectRef, predictor: Any, texts: Sequence[str]
    ) -> list[list[dict[str, Any]]]:
        """The spans of each text: the model's, merged with the project's gazetteer
        when online adaptation is on. Each span carries `source`: "model" or "memory"."""
        found: list[list[dict[str, Any]]] = predictor.extract(list(texts))
        view = self.view(project)
        if not view:
            return [model_only(spans, text) for spans, text in zip(found, texts, strict=True)]
        return [
            merge(spans, view, text, self.memory_score)
            for spans, text in zip(found, texts, strict=True)
        ]

    def view(self, project: ProjectRef) -> View:
        """The gazetteer requests of the project read now (empty with adaptation off)."""
        if not project.policy.online_adaptation:
            return View()
        return self._fresh(project).memory.view

    def feedback_changed(self, project: str) -> None:
        with self._lock:
            project_id = self._names.get(project)
            slot = None if project_id is None else self._slots.get(project_id)
        if slot is not None:
            self._schedule(slot, hooked=True)

    def refresh_now(self, project: ProjectRef) -> None:
        """Read the project's feedback into its gazetteer here and now (tests)."""
        self._refresh(self._slot(project))

    # --- gazetteers ---------------------------------------------------------------------
    def _slot(self, project: ProjectRef) -> _Slot:
        with self._lock:
            slot = self._slots.get(project.id)
            if slot is None:
                slot = self._slots[project.id] = _Slot(project.id)
                while len(self._slots) > MAX_PROJECTS:
                    self._slots.popitem(last=False)
            self._slots.move_to_end(project.id)
            self._names[project.name] = project.id
            return slot

    def _fresh(self, project: ProjectRef) -> _Slot:
        """The project's slot; a refresh is started when due, and waited for (briefly)
        when a hook of this process asked for it, or on the project's first request."""
        slot = self._slot(project)
        if time.monotonic() - slot.checked_at > RECHECK_SECONDS:
            self._schedule(slot, hooked=False)
        if slot.hooked or (slot.memory.watermark == 0 and not slot.idle.is_set()):
            slot.idle.wait(HOOK_WAIT_SECONDS)
        return slot

    def _schedule(self, slot: _Slot, *, hooked: bool) -> None:
        with slot.lock:
            slot.stale = True
            slot.hooked = slot.hooked or hooked
            slot.checked_at = time.monotonic()
            if slot.queued:
                return
            slot.queued = True
            slot.idle.clear()
        self.hub.background.submit(lambda: self._drain(slot))

    def _drain(self, slot: _Slot) -> None:
        """Refresh until no hook arrived during the last refresh."""
        while True:
            with slot.lock:
                if not slot.stale:
                    slot.queued, slot.hooked = False, False
                    slot.idle.set()
                    return
                slot.stale = False
            try:
                self._refresh(slot)
            except Exception:
                log.exception("reading the spans of project %s failed", slot.memory.project_id)

    def _refresh(self, slot: _Slot) -> None:
        slot.memory.refresh(self.hub.store)
        slot.checked_at = time.monotonic()


def ner_serving(app: Any) -> NerServing:
    """The app's NER serving state."""
    from fineloop.serving import get_serving
    from fineloop.tasks.ner.task import TASK

    family = get_serving(app).family(TASK)
    if not isinstance(family, NerServing):  # only a plugin replacing the family gets here
        raise TypeError(f"the {TASK!r} family serves with {type(family).__name__}")
    return family
