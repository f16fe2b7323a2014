"""`ModelCache`: the predictors this process serves with, one per model version, loaded
through the version's task (`Task.load`) and prepared for serving before first use.

A request never waits on a load for long: a version not loaded yet loads on a worker of its
own while the request waits at most `serving_wait_seconds`, then answers 503 with
Retry-After (progress.py). At most `MAX_PREDICTORS` stay loaded, least recently used out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future

from fineloop import artifacts
from fineloop.config import Settings
from fineloop.errors import Invalid
from fineloop.serving.background import Background
from fineloop.serving.progress import Build, wait_for
from fineloop.serving.versions import VersionRef
from fineloop.tasks import get_task
from fineloop.tasks.base import Predictor

MAX_PREDICTORS = 3


class ModelCache:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loader = Background("fineloop-model")
        self._lock = threading.Lock()
        self._loading = threading.Lock()
        self._predictors: OrderedDict[int, Predictor] = OrderedDict()
        self._loads: dict[int, tuple[Future[Predictor], Build]] = {}

    def loaded(self, version: VersionRef) -> Predictor | None:
        """The version's predictor if it is loaded; None (and no load started) otherwise."""
        with self._lock:
            found = self._predictors.get(version.id)
            if found is not None:
                self._predictors.move_to_end(version.id)
            return found

    def ready(self, version: VersionRef, task: str) -> Predictor:
        """The version's predictor; one not loaded yet loads in the background while the
        request waits at most `serving_wait_seconds` (then 503 with Retry-After)."""
        future, build = self.start(version, task)
        return wait_for(future, self.settings.serving_wait_seconds, build, "the model")

    def start(self, version: VersionRef, task: str) -> tuple[Future[Predictor], Build]:
        """Load the version in the background unless it is loaded or loading."""
        with self._lock:
            found = self._predictors.get(version.id)
            if found is not None:
                self._predictors.move_to_end(version.id)
                done: Future[Predictor] = Future()
                done.set_result(found)
                return done, Build(version, "ready")
            pending = self._loads.get(version.id)
            if pending is not None:
                return pending
            pending = self._loads[version.id] = (Future(), Build(version, "loading_model"))
        future, _build = pending

        def load() -> None:
            try:
                future.set_result(self.get(version, task))
            except BaseException as error:
                future.set_exception(error)
            finally:
                with self._lock:
                    self._loads.pop(version.id, None)

        self.loader.submit(load)
        return pending

    def get(self, version: VersionRef, task: str) -> Predictor:
        """The version's predictor, loading it here and now (for background builds)."""
        found = self.loaded(version)
        if found is not None:
            return found
        with self._loading:  # one load at a time: concurrent first requests share it
            return self.loaded(version) or self._load(version, task)

    def _load(self, version: VersionRef, task: str) -> Predictor:
        try:
            local = artifacts.fetch(self.settings, version.artifact_uri)  # URL root: cached
            loaded = get_task(task).load(local)
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
