"""`EmbeddingServing`: the embedding family's serving state in one process — per
(project, version) a `Slot` with the catalog index, the feedback memory and the calibrator.

The champion is resolved by the shared serving state on every request; when it moved to a
version whose slot is not built yet, the new slot is built in the background while the old
one keeps answering (its version is what the response and the logged interaction report),
then the project's active slot is swapped in one assignment. A rollout variant's version
gets a slot of its own, built in the background the same way (`serve_ready`; the champion
answers until it is ready) and kept from eviction while requests use it.

No request waits on a long build: a version without an index (the first search of a
project, a version named in the request) is built in the background (on the shared chore
worker, one build at a time), and the request waits at most `serving_wait_seconds` before
answering 503 with Retry-After and the build's progress (serving/progress.py); models load
through the shared `ModelCache`. `status` reports every build.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from fineloop.errors import FineloopError
from fineloop.serving import calibration
from fineloop.serving.family import Served
from fineloop.serving.progress import Build, wait_for
from fineloop.serving.versions import ProjectRef, VersionRef, served_version
from fineloop.tasks.embedding.serving.catalog import Catalog
from fineloop.tasks.embedding.serving.changes import ChangeLog
from fineloop.tasks.embedding.serving.memory import FeedbackMemory
from fineloop.tasks.embedding.serving.persist import VectorCache
from fineloop.tasks.embedding.serving.slot import Slot, refit, refit_due

if TYPE_CHECKING:
    from fineloop.serving.state import ServingState
    from fineloop.tasks.embedding.predict import EmbeddingPredictor

TASK = "embedding"
MAX_IDLE_SLOTS = 2
QUERY_CACHE = 20_000
RESYNC_SECONDS = 30.0
SAVE_SECONDS = 60.0
SYNC_REFRESH = 256  # up to this many changed items are embedded before the next answer
PIN_SECONDS = 600.0  # a rollout variant's slot unused this long may be evicted
RETRY_SECONDS = 60.0  # a variant whose build failed is retried after this
log = logging.getLogger("fineloop.serving")


class EmbeddingServing:
    def __init__(self, hub: ServingState) -> None:
        self.hub = hub
        self.store = hub.store
        self.settings = hub.settings
        self.background = hub.background
        self.changes = ChangeLog()
        self._lock = threading.Lock()
        self._slots: dict[tuple[int, int], Slot] = {}
        self._building: dict[tuple[int, int], Future[Slot]] = {}
        self._builds: dict[tuple[int, int], Build] = {}  # the latest build of each slot
        self._active: dict[int, int] = {}
        self._pinned: dict[tuple[int, int], float] = {}  # rollout variants' slots: last use
        self._failed: dict[tuple[int, int], tuple[float, BaseException]] = {}
        self._queries: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()

    # --- what the shared serving calls (TaskServing) ---------------------------------------
    def serve(self, project: ProjectRef, version: VersionRef, *, champion: bool) -> Served[Slot]:
        if champion:
            version = self._champion_slot_version(project, version)
        slot = self._slot(project, version)
        if champion:
            with self._lock:
                self._active.setdefault(project.id, version.id)
        self._freshen(slot, project)
        return Served(project, version, slot)

    def serve_ready(self, project: ProjectRef, version: VersionRef) -> Served[Slot] | None:
        """A rollout variant's version, served from its slot once built; until then None
        (the caller answers with the champion) and the slot builds in the background."""
        key = (project.id, version.id)
        now = time.monotonic()
        with self._lock:
            self._pinned[key] = now
            slot = self._slots.get(key)
            failed = self._failed.get(key)
        if slot is None:
            if failed is None or now - failed[0] > RETRY_SECONDS:
                self._build_in_background(project, version, activate=False)
            return None
        self._freshen(slot, project)
        return Served(project, version, slot)

    def prepare(self, project: ProjectRef, version: VersionRef) -> None:
        """Start building the champion's slot in the background (another one serves until
        it is ready)."""
        with self._lock:
            serving = project.id in self._active
        if serving:
            self._champion_slot_version(project, version)
        else:  # not served here yet: have the index ready for the first request
            self._build_in_background(project, version, activate=False)

    def items_changed(self, project: str, item_ids: Iterable[str] | None) -> None:
        """Cached indexes re-embed the items before their next search (`None`: ids unknown,
        e.g. a file import; the indexes resync with the store); a project not served yet
        has its champion's index built in the background."""
        if item_ids is None:
            self.changes.record_all(project)
        else:
            self.changes.record(project, item_ids)
        self.items_arrived(project)

    def items_arrived(self, name: str) -> None:
        """Items were stored: a served project's indexes start embedding them now, in the
        background; a project not served yet gets its champion's index built now, so the
        first search finds it ready (or nearly)."""
        with self._lock:
            served = [slot for slot in self._slots.values() if slot.project == name]
        if served:
            for slot in served:
                self._catch_up_soon(name, slot.catalog)
            return
        try:
            project, version = served_version(self.store, name, None, task=TASK)
        except FineloopError:  # gone, or a base model that fails
            return
        with self._lock:
            known = project.id in self._active or any(p == project.id for p, _ in self._builds)
        if not known:
            self._build_in_background(project, version)

    def build(self, name: str, ref: str | None = None) -> dict[str, Any]:
        """Start building the version's index (default: the champion) unless it is built
        or building; answers the project's index status."""
        project, version = served_version(self.store, name, ref, task=TASK)
        self._build_in_background(project, version)
        return self.status(name)

    def status(self, name: str) -> dict[str, Any]:
        """Every index this process holds or builds for the project, with its progress;
        the champion is listed as "not_built" when nothing was started for it."""
        project, champion = served_version(self.store, name, None, task=TASK)
        with self._lock:
            builds = [b for (p, _), b in self._builds.items() if p == project.id]
            active = self._active.get(project.id)
            building = {v for p, v in self._building if p == project.id}
        versions = [
            b.public() | {"building": b.version.id in building} | _index_info(b) for b in builds
        ]
        if all(b.version.id != champion.id for b in builds):
            versions.append({"version": champion.label, "state": "not_built", "progress": 0.0})
        labels = {b.version.id: b.version.label for b in builds}
        return {
            "project": project.name,
            "champion": champion.label,
            "serving": labels.get(active) if active is not None else None,
            "versions": sorted(versions, key=lambda v: int(str(v["version"])[1:])),
        }

    def ready_predictor(self, version: VersionRef) -> EmbeddingPredictor:
        """The version's model, loaded through the shared cache (503 while it loads)."""
        return cast("EmbeddingPredictor", self.hub.models.ready(version, TASK))

    def predictor(self, version: VersionRef) -> EmbeddingPredictor:
        """The version's model, loaded here and now (for background builds)."""
        return cast("EmbeddingPredictor", self.hub.models.get(version, TASK))

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

    def refit(self, served: Served[Slot], *, only_if_due: bool = False) -> calibration.Calibrator:
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
        """The version's slot; one not built yet is built in the background while this
        request waits up to `serving_wait_seconds` (then NotReady: 503 + Retry-After)."""
        key = (project.id, version.id)
        with self._lock:
            found = self._slots.get(key)
            if found is not None:
                return found
            failed = None if key in self._building else self._failed.pop(key, None)
        if failed is not None:  # the last build failed after its requests stopped waiting
            raise failed[1]
        future, build = self._build_in_background(project, version, activate=False)
        return wait_for(future, self.settings.serving_wait_seconds, build, "the index")

    def _build_in_background(
        self, project: ProjectRef, version: VersionRef, *, activate: bool = True
    ) -> tuple[Future[Slot], Build]:
        """Queue the slot's build unless it is built or building; its future and progress.
        `activate`: the built slot becomes the one the project's champion requests use."""
        key = (project.id, version.id)
        with self._lock:
            found = self._slots.get(key)
            if found is not None:
                done: Future[Slot] = Future()
                done.set_result(found)
                return done, self._builds.get(key) or Build(version, "ready")
            future = self._building.get(key)
            if future is not None:
                return future, self._builds[key]
            future = self._building[key] = Future()
            build = self._builds[key] = Build(version)

        def run() -> None:
            self._build(project, version, future, build)
            error = future.exception()
            with self._lock:
                if error is None and activate:
                    self._active[project.id] = version.id
                elif error is not None:
                    self._failed[key] = (time.monotonic(), error)
            if error is not None:
                log.warning("index of %s failed: %s", version.label, error)

        self.background.submit(run)
        return future, build

    def _build(
        self, project: ProjectRef, version: VersionRef, future: Future[Slot], build: Build
    ) -> None:
        key = (project.id, version.id)
        try:
            build.state = "loading_model"
            predictor = self.predictor(version)
            seq = self.changes.seq()
            cache = VectorCache.for_version(
                self.settings,
                project.name,
                version.number,
                version.id,
                predictor.dimension,
                model=predictor.model_id,
                max_seq_length=predictor.model.get_max_seq_length(),
                encoder=predictor.backend,
            )
            catalog = Catalog(project.id, version, predictor, cache, self.settings.ann_min_items)
            catalog.applied_seq = seq
            build.work, build.state = catalog, "indexing"
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
            build.state, build.finished = "ready", time.monotonic()
            future.set_result(slot)
        except BaseException as error:
            message = error.message if isinstance(error, FineloopError) else str(error)
            build.state, build.finished = "failed", time.monotonic()
            build.error = (message.strip().splitlines() or [type(error).__name__])[0][:300]
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
            self._builds.pop(key, None)

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
            self._catch_up_soon(project.name, catalog)
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

    def _catch_up_soon(self, project: str, catalog: Catalog) -> None:
        """Queue one background catch-up of the catalog with the change log (none if one is
        queued or running: it reads the log when it starts)."""
        with self._lock:
            if catalog.catching_up:
                return
            catalog.catching_up = True
        self.background.submit(lambda: self._catch_up(project, catalog))

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
            with self._lock:
                catalog.catching_up = False
        # items that arrived while this ran found it busy and left their change to it
        changed, _ = self.changes.since(project, catalog.applied_seq)
        if changed is None or changed:
            self._catch_up_soon(project, catalog)

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


def _index_info(build: Build) -> dict[str, Any]:
    """The built index's kind (exact or ivf) with its nprobe and measured recall@10."""
    if build.state != "ready" or not isinstance(build.work, Catalog):
        return {}
    catalog = build.work
    indexed = len(catalog)
    return {  # after the build, items come and go: the live count, and whether it catches up
        "items_indexed": indexed,
        "items_total": indexed,
        "progress": 1.0,
        "catching_up": catalog.catching_up,
        "index": catalog.index.info(),
    }


def embedding_serving(app: Any) -> EmbeddingServing:
    """The app's embedding serving state, made on first use."""
    from fineloop.serving import get_serving

    return cast(EmbeddingServing, get_serving(app).family(TASK))
