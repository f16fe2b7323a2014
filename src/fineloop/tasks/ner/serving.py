"""`NerServing`: the shared predictor serving, plus a gazetteer per project for online
adaptation (adapt.py, adapt_memory.py) while the project's `serving_policy.
online_adaptation` is on (the default).

A project's gazetteer is read from the store in the background, on its first request, when
`feedback_changed` fires and every few seconds while served (serving/refreshed_slots.py), so
a correction is applied to the very next request. Requests read the gazetteer's immutable
view, swapped in whole by a refresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fineloop.serving.family import PredictorServing
from fineloop.serving.refreshed_slots import RefreshedSlots
from fineloop.serving.versions import ProjectRef
from fineloop.tasks.ner.adapt import MEMORY_SCORE, View, merge, model_only
from fineloop.tasks.ner.adapt_memory import SpanMemory

if TYPE_CHECKING:
    from fineloop.serving.state import ServingState


class NerServing(PredictorServing):
    """Predictor serving whose spans are adapted at once by users' corrections."""

    def __init__(self, hub: ServingState, memory_score: float = MEMORY_SCORE) -> None:
        super().__init__(hub)
        self.memory_score = memory_score
        self.memories = RefreshedSlots(hub.background, SpanMemory, self._refresh, "spans")

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
        return self.memories.fresh(project).view

    def feedback_changed(self, project: str) -> None:
        self.memories.feedback_changed(project)

    def refresh_now(self, project: ProjectRef) -> None:
        """Read the project's feedback into its gazetteer here and now (tests)."""
        self.memories.refresh_now(project)

    def _refresh(self, memory: SpanMemory) -> None:
        memory.refresh(self.hub.store)


def ner_serving(app: Any) -> NerServing:
    """The app's NER serving state."""
    from fineloop.serving import get_serving
    from fineloop.tasks.ner.task import TASK

    family = get_serving(app).family(TASK)
    if not isinstance(family, NerServing):  # only a plugin replacing the family gets here
        raise TypeError(f"the {TASK!r} family serves with {type(family).__name__}")
    return family
