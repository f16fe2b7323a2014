"""`RefreshedSlots`: one in-memory copy of each served project's feedback (a gazetteer, a
correction memory ...), read from the store in the background.

A project's memory is refreshed on its first request, when a hook of this process says its
feedback changed (refreshes coalesce: hooks arriving while one is queued or running cause at
most one more), and every `RECHECK_SECONDS` while served (feedback stored by other
processes). A request after a hook waits up to `HOOK_WAIT_SECONDS` for that refresh, so a
correction reaches the very next request (read your writes); so does a project's first
request. Otherwise requests never wait on the store. At most `MAX_PROJECTS` memories are
kept, the least recently requested dropped first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from fineloop.serving.background import Background
from fineloop.serving.versions import ProjectRef

log = logging.getLogger("fineloop.serving")
RECHECK_SECONDS = 5.0
HOOK_WAIT_SECONDS = 2.0
MAX_PROJECTS = 64


class Memory(Protocol):
    @property
    def project_id(self) -> int: ...

    @property
    def watermark(self) -> int: ...  # 0 until its first refresh read something


M = TypeVar("M", bound=Memory)


class Slot(Generic[M]):
    """One project's memory and the state of its refreshes."""

    def __init__(self, memory: M) -> None:
        self.memory = memory
        self.lock = threading.Lock()
        self.idle = threading.Event()
        self.idle.set()
        self.queued = False
        self.stale = False
        self.hooked = False  # a hook of this process asked for the pending refresh
        self.checked_at = -RECHECK_SECONDS


class RefreshedSlots(Generic[M]):
    """The projects' memories: `new(project_id)` makes one, `refresh(memory)` reads new
    feedback into it (on `background`); `what` names the memory in logged failures."""

    def __init__(
        self,
        background: Background,
        new: Callable[[int], M],
        refresh: Callable[[M], None],
        what: str,
    ) -> None:
        self.background = background
        self.new = new
        self.refresh = refresh
        self.what = what
        self._lock = threading.Lock()
        self._slots: OrderedDict[int, Slot[M]] = OrderedDict()
        self._names: dict[str, int] = {}

    def fresh(self, project: ProjectRef) -> M:
        """The project's memory; a refresh is started when due, and waited for (briefly)
        when a hook of this process asked for it, or on the project's first request."""
        slot = self._slot(project)
        if time.monotonic() - slot.checked_at > RECHECK_SECONDS:
            self._schedule(slot, hooked=False)
        if slot.hooked or (slot.memory.watermark == 0 and not slot.idle.is_set()):
            slot.idle.wait(HOOK_WAIT_SECONDS)
        return slot.memory

    def feedback_changed(self, project: str) -> None:
        """Refresh the project's memory, if it has one (the `feedback_changed` hook)."""
        with self._lock:
            project_id = self._names.get(project)
            slot = None if project_id is None else self._slots.get(project_id)
        if slot is not None:
            self._schedule(slot, hooked=True)

    def refresh_now(self, project: ProjectRef) -> None:
        """Read the project's feedback into its memory here and now (tests, benchmarks)."""
        self._refresh(self._slot(project))

    def _slot(self, project: ProjectRef) -> Slot[M]:
        with self._lock:
            slot = self._slots.get(project.id)
            if slot is None:
                slot = self._slots[project.id] = Slot(self.new(project.id))
                while len(self._slots) > MAX_PROJECTS:
                    self._slots.popitem(last=False)
            self._slots.move_to_end(project.id)
            self._names[project.name] = project.id
            return slot

    def _schedule(self, slot: Slot[M], *, hooked: bool) -> None:
        with slot.lock:
            slot.stale = True
            slot.hooked = slot.hooked or hooked
            slot.checked_at = time.monotonic()
            if slot.queued:
                return
            slot.queued = True
            slot.idle.clear()
        self.background.submit(lambda: self._drain(slot))

    def _drain(self, slot: Slot[M]) -> None:
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
                log.exception(
                    "reading the %s of project %s failed", self.what, slot.memory.project_id
                )

    def _refresh(self, slot: Slot[M]) -> None:
        self.refresh(slot.memory)
        slot.checked_at = time.monotonic()
