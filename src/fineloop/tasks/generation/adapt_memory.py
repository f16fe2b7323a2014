"""`CorrectionMemory`: the corrections of one generation project, ready to be reused
between retrains (adapt.py decides how).

Read from the store by watermark: each refresh reads only feedback past the last id seen
(corrections, and thumbs that may retract one), in pages, joined to the interactions they
judge. One correction per prompt is kept, the newest (a later correction of the same
prompt replaces the earlier one), and at most `MAX_CORRECTIONS` of them, the newest.

A thumbs-down on an answer that was a correction returned as is (`adapted.mode` exact or
direct in the logged output) retracts the corrections it used: users said the reused
answer was wrong there, so it is not reused again. Thumbs-up are not kept: a thumbed-up
reply is what the model already says for that prompt, so reusing it changes little.

Each correction is embedded by its last user turn (the question; MiniLM, normalized) once,
in the refresh (a background chore), never on the request path. Lookups read an immutable
`View` the refresh swaps in whole, so requests never see half a refresh.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fineloop.serving.watermark import FeedbackWatermark, project_pages, shown_io
from fineloop.store import Store
from fineloop.tasks.generation.prompts import Message, output_text, prompt_key, prompt_messages

log = logging.getLogger("fineloop.serving")

MAX_CORRECTIONS = 5_000
MAX_TEXT_CHARS = 20_000  # a longer correction is no answer to return or show as an example
_PAGE = 2_000
RETRACTING = ("exact", "direct")


class Encoder(Protocol):
    """Text to unit vectors, one row per text."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class Correction:
    """One corrected prompt: what the user asked, in which context, and the right answer."""

    key: str  # the whole conversation, normalized (exact reuse)
    context: str  # every turn before the last user turn, normalized (direct reuse)
    system: str  # the system turns, normalized (few-shot examples must share them)
    question: str  # the last user turn: what is embedded
    text: str
    feedback_id: int


@dataclass(frozen=True)
class View:
    """What lookups read: corrections and their embeddings, row-aligned (`vectors` None
    when no encoder could be loaded: only exact reuse works then)."""

    corrections: tuple[Correction, ...] = ()
    vectors: np.ndarray | None = None
    by_key: dict[str, int] = field(default_factory=dict)

    def exact(self, key: str) -> Correction | None:
        row = self.by_key.get(key)
        return None if row is None else self.corrections[row]


def keys(messages: list[Message]) -> tuple[str, str, str]:
    """(key, context, system) of a conversation that ends with a user turn."""
    system = [m for m in messages if m["role"] == "system"]
    return prompt_key(messages), prompt_key(messages[:-1]), prompt_key(system)


class CorrectionMemory:
    """The reusable corrections of one project; `refresh` runs on one thread at a time."""

    def __init__(self, project_id: int, max_corrections: int = MAX_CORRECTIONS) -> None:
        self.project_id = project_id
        self.max_corrections = max_corrections
        self._watermark = FeedbackWatermark()
        self._page = project_pages(project_id, ("correction", "thumb"), shown_io, _PAGE)
        self.view = View()
        self._entries: dict[str, Correction] = {}
        self._vectors: dict[int, np.ndarray] = {}  # feedback id -> embedding
        self._retracted: set[int] = set()

    def refresh(self, store: Store, encoder: Encoder | None) -> int:
        """Read feedback past the watermark, embed new corrections, publish a new view;
        returns how many feedback rows were new."""
        read = 0
        for rows in self._watermark.pages(store, self._page):
            read += len(rows)
            for row in rows:
                self._apply(row)
        self._bound()
        self.embed(encoder)
        return read

    def _apply(self, row: Any) -> None:
        payload = row.payload if isinstance(row.payload, dict) else {}
        if row.kind == "thumb":
            if payload.get("value") == "down":
                self._retract(row.shown_output)
            return
        if row.id in self._retracted:
            return
        messages = prompt_messages(row.input if row.input is not None else row.shown_input)
        text = output_text(payload.get("output"))
        text = text.strip() if text is not None else ""
        if messages is None or not text or len(text) > MAX_TEXT_CHARS:
            return
        key, context, system = keys(messages)
        known = self._entries.get(key)
        if known is not None and known.feedback_id >= row.id:
            return  # a newer correction of the same prompt is kept
        question = messages[-1]["content"]
        self._entries[key] = Correction(key, context, system, question, text, row.id)

    def _retract(self, output: Any) -> None:
        adapted = output.get("adapted") if isinstance(output, dict) else None
        if not isinstance(adapted, dict) or adapted.get("mode") not in RETRACTING:
            return
        ids = {i for i in adapted.get("feedback_ids") or [] if isinstance(i, int)}
        self._retracted |= ids
        for key in [k for k, c in self._entries.items() if c.feedback_id in ids]:
            del self._entries[key]

    def _bound(self) -> None:
        """Keep the newest corrections only; forget what the bounds no longer need."""
        if len(self._entries) > self.max_corrections:
            newest = sorted(self._entries.values(), key=lambda c: c.feedback_id)
            self._entries = {c.key: c for c in newest[-self.max_corrections :]}
        kept = {c.feedback_id for c in self._entries.values()}
        self._vectors = {i: v for i, v in self._vectors.items() if i in kept}
        if len(self._retracted) > self.max_corrections:
            self._retracted = set(sorted(self._retracted)[-self.max_corrections :])

    def embed(self, encoder: Encoder | None) -> None:
        """Embed corrections not embedded yet and publish the new view."""
        corrections = tuple(sorted(self._entries.values(), key=lambda c: c.feedback_id))
        vectors: np.ndarray | None = None
        if encoder is not None:
            missing = [c for c in corrections if c.feedback_id not in self._vectors]
            if missing:
                encoded = encoder.encode([c.question for c in missing])
                for correction, vector in zip(missing, encoded, strict=True):
                    self._vectors[correction.feedback_id] = np.asarray(vector, np.float32)
            if corrections:
                vectors = np.stack([self._vectors[c.feedback_id] for c in corrections])
        by_key = {c.key: row for row, c in enumerate(corrections)}
        self.view = View(corrections, vectors, by_key)

    @property
    def watermark(self) -> int:
        return self._watermark.mark
