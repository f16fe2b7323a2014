"""Online adaptation for generation: corrections reused between retrains.

Per the project's serving policy (`reuse_corrections`, off while `online_adaptation` is
false), for a conversation whose last turn is the user's:
- exact: a corrected prompt equal to it up to case, punctuation and spacing (every turn,
  system turns included) → the correction is the answer, no generation;
- direct: exact, or a corrected prompt in the same context (the turns before the last user
  turn equal, normalized) whose last user turn has cosine ≥ `reuse_min_similarity` to this
  one (all-MiniLM-L6-v2) → the nearest such correction is the answer;
- few_shot: exact, else up to `reuse_shots` corrected prompts with the same system turns
  and cosine ≥ `adaptation_min_similarity`, nearest last (closest to the question), go
  before the conversation as earlier (user, assistant) turns; the model writes the answer.
An exact hit is returned in every mode: a prompt equal to a corrected one up to case and
punctuation has no better answer than its correction.
Anything else is answered as if adaptation were off. bench/generation_adaptation.py
measures the modes on SmolLM2-135M-Instruct; `DEFAULT_MODE` is what it chose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from fineloop.policies import ReuseMode, ServingPolicy
from fineloop.tasks.generation.adapt_memory import Correction, View, keys
from fineloop.tasks.generation.predict_io import ChatMessage, GenerationInput, GenerationOutput
from fineloop.tasks.generation.predict_stop import cut_at_stop
from fineloop.tasks.generation.prompts import Message

DEFAULT_MODE: ReuseMode = "exact"  # bench/generation_adaptation.py: the only mode with no harm
Mode = Literal["exact", "direct", "few_shot"]


class AdaptedInfo(BaseModel):
    """How fineloop adapted an answer from corrections (see the serving policy's
    `reuse_corrections`); feedback on such an answer can be told apart by it."""

    mode: Mode = Field(
        description="exact or direct: a correction returned as it is; few_shot: the "
        "model answered with corrections shown as earlier turns."
    )
    feedback_ids: list[int] = Field(description="The corrections (feedback ids) used.")
    similarity: float | None = Field(
        default=None, description="Cosine of the question to the nearest correction used."
    )


@dataclass(frozen=True)
class Shot:
    """A corrected prompt shown to the model as an earlier turn."""

    prompt: str
    completion: str
    feedback_id: int
    similarity: float


@dataclass(frozen=True)
class Adapted:
    """How one request was adapted (`mode` None: it was not)."""

    mode: Mode | None = None
    text: str | None = None  # exact, direct: the answer
    shots: tuple[Shot, ...] = ()
    feedback_ids: tuple[int, ...] = ()
    similarity: float | None = None

    def public(self) -> AdaptedInfo | None:
        """What the response and the logged output carry (None when not adapted)."""
        if self.mode is None:
            return None
        similarity = None if self.similarity is None else round(self.similarity, 4)
        return AdaptedInfo(
            mode=self.mode, feedback_ids=list(self.feedback_ids), similarity=similarity
        )

    def shots_logged(self) -> list[dict[str, str]]:
        return [{"prompt": s.prompt, "completion": s.completion} for s in self.shots]


NOT_ADAPTED = Adapted()


def mode_of(policy: ServingPolicy) -> ReuseMode:
    if not policy.online_adaptation:
        return "off"
    return policy.reuse_corrections or DEFAULT_MODE


def exact(view: View, messages: list[Message]) -> Adapted:
    found = view.exact(keys(messages)[0])
    return NOT_ADAPTED if found is None else _answer("exact", found, 1.0)


def nearest(
    view: View, messages: list[Message], query: np.ndarray, mode: Mode, policy: ServingPolicy
) -> Adapted:
    """Direct or few-shot adaptation from the corrections most like `query` (the last user
    turn's unit embedding)."""
    if view.vectors is None or not view.corrections:
        return NOT_ADAPTED
    _key, context, system = keys(messages)
    sims = view.vectors @ np.asarray(query, dtype=np.float32)
    order = np.argsort(-sims, kind="stable")
    if mode == "direct":
        for row in order:
            found, similarity = view.corrections[row], float(sims[row])
            if similarity < policy.reuse_min_similarity:
                break
            if found.context == context:
                return _answer("direct", found, similarity)
        return NOT_ADAPTED
    shots: list[Shot] = []
    for row in order:
        found, similarity = view.corrections[row], float(sims[row])
        if similarity < policy.adaptation_min_similarity or len(shots) >= policy.reuse_shots:
            break
        if found.system == system:
            shots.append(Shot(found.question, found.text, found.feedback_id, similarity))
    if not shots:
        return NOT_ADAPTED
    shots.reverse()  # the nearest example right before the question
    ids = tuple(s.feedback_id for s in shots)
    return Adapted(
        "few_shot", shots=tuple(shots), feedback_ids=ids, similarity=shots[-1].similarity
    )


def _answer(mode: Mode, found: Correction, similarity: float) -> Adapted:
    return Adapted(mode, text=found.text, feedback_ids=(found.feedback_id,), similarity=similarity)


def with_shots(
    messages: list[Message], asked: GenerationInput, shots: tuple[Shot, ...]
) -> GenerationInput:
    """The request the model sees: the leading system turns, the examples as earlier
    turns, then the conversation."""
    lead = 0
    while lead < len(messages) and messages[lead]["role"] == "system":
        lead += 1
    examples: list[Message] = []
    for shot in shots:
        examples.append({"role": "user", "content": shot.prompt})
        examples.append({"role": "assistant", "content": shot.completion})
    combined = [ChatMessage.model_validate(m) for m in messages[:lead] + examples + messages[lead:]]
    return asked.model_copy(update={"messages": combined, "prompt": None})


def returned(adapted: Adapted, asked: GenerationInput) -> GenerationOutput:
    """The output of a correction returned as it is: no token read or written; the
    request's stop strings still end it."""
    text, _stopped = cut_at_stop(adapted.text or "", asked.stop)
    return GenerationOutput(text=text, finish_reason="stop", prompt_tokens=0, completion_tokens=0)


class ReturnedStream:
    """A correction returned as it is, as a stream: one chunk (the predictor's `stream`
    shape, so the streaming route needs no second path)."""

    def __init__(self, adapted: Adapted, asked: GenerationInput) -> None:
        self.output: GenerationOutput | None = returned(adapted, asked)
        self._chunks = iter([self.output.text] if self.output.text else [])

    def __iter__(self) -> ReturnedStream:
        return self

    def __next__(self) -> str:
        return next(self._chunks)

    def close(self) -> None:
        pass
