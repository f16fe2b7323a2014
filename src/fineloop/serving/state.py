"""`ServingState`: per-process caches behind search, select and embeddings.

Per (project, version) a `Slot` holds the catalog index, the feedback memory and the
calibrator; predictors are cached per version. The champion is resolved from the store on
every request; when it moved to a version whose slot is not built yet, the new slot is built
in the background while the old one keeps answering (its version is what the response and
the logged interaction report), then the project's active slot is swapped in one
assignment. A rollout variant's version gets a slot of its own, built in the background
the same way (`serve_ready`; the champion answers until it is ready) and kept from eviction
while requests use it. Nothing here imports torch until a model is loaded.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from typing import TYPE_CHECKING, cast

import numpy as np

from fineloop import artifacts
from fineloop.config import Settings
from fineloop.errors import FineloopError, Invalid
from fineloop.rollouts.live import LiveRollouts
from fineloop.serving import calibration
from fineloop.serving.background import Background
from fineloop.serving.catalog import Catalog, VersionRef
from fineloop.serving.changes import ChangeLog
from fineloop.serving.memory import FeedbackMemory
from fineloop.serving.persist import VectorCache
from fineloop.serving.slot import Served, Slot, refit, refit_due
from fineloop.serving.versions import TASK, ProjectRef, served_version
from fineloop.store import Store
from fineloop.tasks import get_task
from fineloop.threads import passive_for_serving

if TYPE_CHECKING:
    from fineloop.tasks.embedding.predict import EmbeddingPredictor

MAX_PREDICTORS = 3
MAX_IDLE_SLOTS = 2
QUERY_CACHE = 20_000
RESYNC_SECONDS = 30.0
SAVE_SECONDS = 60.0
SYNC_REFRESH = 256  # up to this many changed items are embedded before the next answer
PIN_SECONDS = 600.0  # a rollout variant's slot unused this long may be evicted
RETRY_SECONDS = 60.0  # a variant whose build failed is retried after this
log = logging.getLogger("fineloop.serving")


class ServingState:
    def __init__(self, store: Store, settings: Settings) -> None:
        if "torch" not in sys.modules:  # see fineloop.threads
            passive_for_serving()
        self.store = store
        self.settings = settings
        self.background = Background()
        self.changes = ChangeLog()
        self._lock = threading.Lock()
        self._loading = threading.Lock()
        self._predictors: OrderedDict[int, EmbeddingPredictor] = OrderedDict()
        self._slots: dict[tuple[int, int], Slot] = {}
        self._building: dict[tuple[int, int], Future[Slot]] = {}
        self._active: dict[int, int] = {}
        self._pinned: dict[tuple[int, int], float] = {}  # rollout variants' slots: last use
        self._failed: dict[tuple[int, int], float] = {}
        self.rollouts = LiveRollouts(store, self.background, self.prepare)
        self._queries: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()

    # --- what the routes call -------------------------------------------------------------
    def serve(self, name: str, ref: str | None = None) -> Served:
        project, version = served_version(self.store, name, ref)
        if ref is None or ref == "champion":
            version = self._champion_slot_version(project, version)
        slot = self._slot(project, version)
        if ref is None or ref == "champion":
            with self._lock:
                self._active.setdefault(project.id, version.id)
        self._freshen(slot, project)
        return Served(project, version, slot)

    def serve_ready(self, project: ProjectRef, version: VersionRef) -> Served | None:
        """A rollout variant's version, served from its slot once built; until then None
        (the caller answers with the champion) and the slot builds in the background."""
        key = (project.id, version.id)
        now = time.monotonic()
        with self._lock:
            self._pinned[key] = now
            slot = self._slots.get(key)
            failed = self._failed.get(key)
        if slot is None:
            if failed is None or now - failed > RETRY_SECONDS:
                self._build_in_background(project, version, activate=False)
            return None
        self._freshen(slot, project)
        return Served(project, version, slot)

    def prepare(self, name: str) -> None:
        """Start building the champion's slot in the background if another one serves."""
        try:
            project, version = served_version(self.store, name, None)
        except FineloopError:
            return
        with self._lock:
            serving = project.id in self._active
        if serving:
            self._champion_slot_version(project, version)

    def predictor(self, version: VersionRef) -> EmbeddingPredictor:
        with self._lock:
            found = self._predictors.get(version.id)
            if found is not None:
                self._predictors.move_to_end(version.id)
                return found
        with self._loading:  # one load at a time: concurrent first requests share it
            return self._predictors.get(version.id) or self._load(version)

    def _load(self, version: VersionRef) -> EmbeddingPredictor:
        try:
            local = artifacts.fetch(self.settings, version.artifact_uri)  # URL root: cached
            loaded = cast("EmbeddingPredictor", get_task(TASK).load(local))
            loaded.prepare_for_serving(self.settings)
        except Exception as error:  # a missing folder, a hub id without a hub, a bad file
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            raise Invalid(
                f"cannot load the model of {version.label} from {version.artifact_uri!r}: {reason}",
                field="version",
            ) from error
        with self._lock:
            self._predictors[version.id] = loaded
            while len(self._predictors) > MAX_PREDICTORS:
                self._predictors.popitem(last=False)
        return loaded

    def feedback_changed(self, project: str) -> None:
        with self._lock:
            slots = [s for s in self._slots.values() if s.project == project]
        for slot in slots:
            slot.memory.dirty = True
        self.rollouts.feedback_arrived(project)

    def remember_query(self, version_id: int, interaction_id: str, vector: np.ndarray) -> None:
        """Keep a served query's embedding, so feedback on it needs no second encode."""
        with self._lock:
            self._queries[(version_id, interaction_id)] = vector
            while len(self._queries) > QUERY_CACHE:
                self._queries.popitem(last=False)

    def refit(self, served: Served, *, only_if_due: bool = False) -> calibration.Calibrator:
        """Fit the calibrator on every judged shown item, store it, and use it at once.
        `only_if_due`: skip unless enough judged items arrived since the last fit."""
        return refit(self.store, served, only_if_due=only_if_due)

    # --- slots ------------------------------------------------------------------------------
    def _champion_slot_version(self, project: ProjectRef, champion: VersionRef) -> VersionRef:
        """The champion if its slot is ready; else the active one while it builds."""
        with self._lock:
            active = self._active.get(project.id)
            if active is None or active == champion.id:
                return champion
            if (project.id, champion.id) in self._slots:
                self._active[project.id] = champion.id
                return champion
            current = self._slots.get((project.id, active))
        if current is None:
            return champion
        self._build_in_background(project, champion)
        return current.catalog.version

    def _slot(self, project: ProjectRef, version: VersionRef) -> Slot:
        key = (project.id, version.id)
        with self._lock:
            found = self._slots.get(key)
            if found is not None:
                return found
            future = self._building.get(key)
            mine = future is None
            if future is None:
                future = self._building[key] = Future()
        if mine:
            self._build(project, version, future)
        return future.result()

    def _build_in_background(
        self, project: ProjectRef, version: VersionRef, *, activate: bool = True
    ) -> None:
        key = (project.id, version.id)
        with self._lock:
            if key in self._slots or key in self._building:
                return
            future: Future[Slot] = Future()
            self._building[key] = future

        def build() -> None:
            self._build(project, version, future)
            error = future.exception()
            with self._lock:
                if error is None and activate:
                    self._active[project.id] = version.id
                elif error is not None and not activate:
                    self._failed[key] = time.monotonic()
            if error is not None and not activate:
                log.warning("index of %s for a rollout failed: %s", version.label, error)

        self.background.submit(build)

    def _build(self, project: ProjectRef, version: VersionRef, future: Future[Slot]) -> None:
        key = (project.id, version.id)
        try:
            predictor = self.predictor(version)
            seq = self.changes.seq()
            cache = VectorCache.for_version(
                self.settings, project.name, version.number, version.id, predictor.dimension
            )
            catalog = Catalog(project.id, version, predictor, cache)
            catalog.applied_seq = seq
            catalog.load_all(self.store)
            if cache is not None:
                cache.forget()
                if catalog.dirty or not cache.path.exists():
                    self.background.submit(lambda: self._save(catalog))
            memory = FeedbackMemory(project.id, predictor)
            memory.refresh(self.store, lambda k: self._cached_query(version.id, k))
            with self.store.read() as session:
                stored = calibration.latest(session, project.id, version.id)
            slot = Slot(project.name, catalog, memory, stored or calibration.DEFAULT)
            slot.judged_at_fit = stored.samples if stored else 0
            with self._lock:
                self._slots[key] = slot
                self._evict(project.id)
            future.set_result(slot)
        except BaseException as error:
            future.set_exception(error)
        finally:
            with self._lock:
                self._building.pop(key, None)

    def _evict(self, project_id: int) -> None:
        """Drop slots no project serves beyond the newest MAX_IDLE_SLOTS (lock held)."""
        busy = {(p, v) for p, v in self._active.items()}
        now = time.monotonic()
        busy |= {key for key, used in self._pinned.items() if now - used < PIN_SECONDS}
        idle = [key for key in self._slots if key not in busy]
        for key in idle[:-MAX_IDLE_SLOTS] if len(idle) > MAX_IDLE_SLOTS else []:
            del self._slots[key]

    # --- keeping a slot fresh ---------------------------------------------------------------
    def _freshen(self, slot: Slot, project: ProjectRef) -> None:
        """Apply item changes (a few at once, so this request sees them; many in the
        background), resync and save now and then, read new feedback, maybe refit."""
        catalog = slot.catalog
        changed, seq = self.changes.since(project.name, catalog.applied_seq)
        if changed is not None and 0 < len(changed) <= SYNC_REFRESH:
            with catalog.lock:
                if catalog.applied_seq < seq:
                    catalog.refresh(self.store, changed)
                    catalog.applied_seq = seq
        elif changed is None or changed:
            if not catalog.catching_up:
                catalog.catching_up = True
                self.background.submit(lambda: self._catch_up(project.name, catalog))
        elif time.monotonic() - catalog.synced_at > RESYNC_SECONDS:
            catalog.synced_at = time.monotonic()  # one resync at a time
            self.background.submit(lambda: self._resync(catalog))
        cache = catalog.cache
        if catalog.dirty and cache is not None and time.monotonic() - cache.saved_at > SAVE_SECONDS:
            cache.saved_at = time.monotonic()  # one save at a time
            self.background.submit(lambda: self._save(catalog))
        if slot.memory.due():
            with slot.lock:
                if slot.memory.due():
                    slot.memory.refresh(
                        self.store, lambda k: self._cached_query(catalog.version.id, k)
                    )
            self._maybe_refit(slot, project, catalog.version)

    def _catch_up(self, project: str, catalog: Catalog) -> None:
        try:
            with catalog.lock:
                changed, seq = self.changes.since(project, catalog.applied_seq)
                if changed is None:
                    catalog.resync(self.store)
                elif changed:
                    catalog.refresh(self.store, changed)
                catalog.applied_seq = seq
        finally:
            catalog.catching_up = False

    def _save(self, catalog: Catalog) -> None:
        with catalog.lock:
            catalog.save()

    def _resync(self, catalog: Catalog) -> None:
        with catalog.lock:
            catalog.resync(self.store)

    def _maybe_refit(self, slot: Slot, project: ProjectRef, version: VersionRef) -> None:
        """Refit in the background once enough new judged items arrived since the last fit."""
        if slot.refitting or not refit_due(slot, slot.memory.labelled):
            return
        slot.refitting = True

        def refit() -> None:
            try:
                self.refit(Served(project, version, slot), only_if_due=True)
            finally:
                slot.refitting = False

        self.background.submit(refit)

    def _cached_query(self, version_id: int, interaction_id: str) -> np.ndarray | None:
        with self._lock:
            return self._queries.get((version_id, interaction_id))
