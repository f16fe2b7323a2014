"""`ServingState`: per-process caches behind search, select and embeddings.

Per (project, version) a `Slot` holds the catalog index, the feedback memory and the
calibrator; predictors are cached per version. The champion is resolved from the store on
every request; when it moved to a version whose slot is not built yet, the new slot is built
in the background while the old one keeps answering (its version is what the response and
the logged interaction report), then the project's active slot is swapped in one
assignment. Nothing here imports torch until a model is loaded.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fineloop.config import Settings
from fineloop.errors import FineloopError
from fineloop.serving import calibration
from fineloop.serving.background import Background
from fineloop.serving.catalog import Catalog, VersionRef
from fineloop.serving.changes import ChangeLog
from fineloop.serving.memory import FeedbackMemory
from fineloop.serving.persist import VectorCache
from fineloop.serving.versions import TASK, ProjectRef, served_version
from fineloop.store import Store
from fineloop.tasks import get_task

if TYPE_CHECKING:
    from fineloop.tasks.embedding.predict import EmbeddingPredictor

MAX_PREDICTORS = 3
MAX_IDLE_SLOTS = 2
QUERY_CACHE = 20_000
RESYNC_SECONDS = 30.0
SAVE_SECONDS = 60.0


@dataclass
class Slot:
    project: str
    catalog: Catalog
    memory: FeedbackMemory
    calibrator: calibration.Calibrator
    lock: threading.Lock = field(default_factory=threading.Lock)
    refitting: bool = False
    judged_at_fit: int = 0


@dataclass(frozen=True)
class Served:
    """Everything one request uses, fixed at its start."""

    project: ProjectRef
    version: VersionRef
    slot: Slot


class ServingState:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.background = Background()
        self.changes = ChangeLog()
        self._lock = threading.Lock()
        self._predictors: OrderedDict[int, EmbeddingPredictor] = OrderedDict()
        self._slots: dict[tuple[int, int], Slot] = {}
        self._building: dict[tuple[int, int], Future[Slot]] = {}
        self._active: dict[int, int] = {}
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
        loaded: EmbeddingPredictor = get_task(TASK).load(version.artifact_uri)
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

    def remember_query(self, version_id: int, interaction_id: str, vector: np.ndarray) -> None:
        """Keep a served query's embedding, so feedback on it needs no second encode."""
        with self._lock:
            self._queries[(version_id, interaction_id)] = vector
            while len(self._queries) > QUERY_CACHE:
                self._queries.popitem(last=False)

    def refit(self, served: Served) -> calibration.Calibrator:
        """Fit the calibrator on every judged shown item, store it, and use it at once."""
        slot = served.slot
        scores, labels = self.calibration_samples(slot)
        fitted = calibration.fit(scores, labels, served.project.policy.calibration)
        with self.store.write() as session:
            calibration.save(session, served.project.id, served.version.id, fitted)
        slot.calibrator = fitted
        return fitted

    def calibration_samples(self, slot: Slot) -> tuple[np.ndarray, np.ndarray]:
        """(cosine under this version, accepted) for each labelled shown item still listed."""
        index, memory = slot.catalog.index, slot.memory
        triples = [(r, index.row_of[i], y) for r, i, y in memory.samples() if i in index.row_of]
        if not triples:
            return np.zeros(0), np.zeros(0)
        queries = memory.matrix[[t[0] for t in triples]]
        items = index.vectors([t[1] for t in triples])
        return np.sum(queries * items, axis=1), np.array([t[2] for t in triples], dtype=float)

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

    def _build_in_background(self, project: ProjectRef, version: VersionRef) -> None:
        key = (project.id, version.id)
        with self._lock:
            if key in self._slots or key in self._building:
                return
            future: Future[Slot] = Future()
            self._building[key] = future

        def build() -> None:
            self._build(project, version, future)
            if future.exception() is None:
                with self._lock:
                    self._active[project.id] = version.id

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
        idle = [key for key in self._slots if key not in busy]
        for key in idle[:-MAX_IDLE_SLOTS] if len(idle) > MAX_IDLE_SLOTS else []:
            del self._slots[key]

    # --- keeping a slot fresh ---------------------------------------------------------------
    def _freshen(self, slot: Slot, project: ProjectRef) -> None:
        catalog = slot.catalog
        changed, seq = self.changes.since(project.name, catalog.applied_seq)
        if changed is None or changed:
            with catalog.lock:
                if catalog.applied_seq < seq:
                    if changed is None:
                        catalog.resync(self.store)
                    else:
                        catalog.refresh(self.store, changed)
                    catalog.applied_seq = seq
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

    def _save(self, catalog: Catalog) -> None:
        with catalog.lock:
            catalog.save()

    def _resync(self, catalog: Catalog) -> None:
        with catalog.lock:
            catalog.resync(self.store)

    def _maybe_refit(self, slot: Slot, project: ProjectRef, version: VersionRef) -> None:
        """Refit in the background once enough new judged items arrived since the last fit."""
        judged = sum(len(entry.labels) for entry in slot.memory.entries)
        step = (
            calibration.FIT_MIN
            if slot.calibrator.method == "default"
            else (calibration.REFIT_EVERY)
        )
        if slot.refitting or judged < calibration.FIT_MIN or judged - slot.judged_at_fit < step:
            return
        slot.refitting = True

        def refit() -> None:
            try:
                self.refit(Served(project, version, slot))
                slot.judged_at_fit = judged
            finally:
                slot.refitting = False

        self.background.submit(refit)

    def _cached_query(self, version_id: int, interaction_id: str) -> np.ndarray | None:
        with self._lock:
            return self._queries.get((version_id, interaction_id))
