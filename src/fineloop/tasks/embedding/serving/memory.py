"""`FeedbackMemory`: every judged query of a project, embedded by the serving version.

What instant adaptation and calibration learn from. Built lazily from the store (selection
and label events, joined to the interactions they judge) and then kept up to date by
watermark: `refresh` reads only feedback rows with an id above the last one seen. The feedback
routes mark memories dirty after storing (read-your-writes in this process); a memory is also
re-checked every `RECHECK_SECONDS`, which picks up feedback stored by other processes.

How one judged interaction labels its shown items (values used by adaptation; calibration
counts value > 0 as accepted, else rejected):
- explicitly selected (or named by a label event): +1; explicitly rejected: -1;
- in a `select` interaction the user answered with the final set (any `selected`):
  items fineloop had selected but the user left out: -1 (the user removed them), the other
  shown candidates: -SOFT (seen, not wanted; SOFT = 0.75, a little weaker than an explicit
  rejection);
- in a `select` interaction answered with rejections only: kept selections +SOFT, the
  other candidates -SOFT;
- in a `search` interaction, items the user did not mention stay unlabelled.
So wrong items fineloop keeps proposing are pushed down by every answer, even when the user
never names them.

During a rollout each judged query also remembers its *arm*: (rollout id, variant) of the
interaction it judges ("" for a request the champion answered as a fallback). Adaptation
can then keep each variant to its own users' feedback, so the variants stay apart and the
A/B comparison measures the models, not feedback pooled across them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from fineloop.serving.watermark import FeedbackWatermark, project_pages
from fineloop.store import Store
from fineloop.store.interactions import shown_item_ids
from fineloop.store.schema import Feedback
from fineloop.tasks.embedding.serving.catalog import Encoder

SOFT = 0.75
Arm = tuple[int, str]
RECHECK_SECONDS = 2.0
_PAGE = 5_000


def query_text(value: Any) -> str | None:
    """The query of an interaction input: a string, or a dict's query/text/input string."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("query", "text", "input"):
            if isinstance(value.get(key), str):
                return str(value[key])
    return None


@dataclass
class Judged:
    """One judged query: what the user said about the items shown for it."""

    key: str
    query: str
    mode: str = "search"
    shown: list[str] = field(default_factory=list)
    proposed: set[str] = field(default_factory=set)  # what `select` had selected
    picks: dict[str, float] = field(default_factory=dict)  # explicit: +1 / -1
    final_given: bool = False
    weight: float = 0.0
    at: datetime | None = None
    labels: dict[str, float] = field(default_factory=dict)
    arm: Arm | None = None  # (rollout id, variant) of the judged interaction, if any

    def relabel(self) -> None:
        labels = dict(self.picks)
        if self.mode == "select":
            for item in self.shown:
                if item in labels:
                    continue
                if item in self.proposed:
                    labels[item] = -1.0 if self.final_given else SOFT
                else:
                    labels[item] = -SOFT
        self.labels = labels


def _judged_columns(shown: Any) -> list[Any]:
    return [
        Feedback.id,
        Feedback.kind,
        Feedback.payload,
        Feedback.input,
        Feedback.timestamp,
        Feedback.reward,
        Feedback.interaction_id,
        shown.input.label("interaction_input"),
        shown.output,
        shown.variant,
        shown.interaction_metadata.label("interaction_metadata"),
    ]


class FeedbackMemory:
    """Judged queries of one (project, version) and their embeddings, row-aligned."""

    def __init__(self, project_id: int, encoder: Encoder) -> None:
        self.project_id = project_id
        self.encoder = encoder
        self._watermark = FeedbackWatermark()
        self._page = project_pages(project_id, ("selection", "label"), _judged_columns, _PAGE)
        self.entries: list[Judged] = []
        self._position: dict[str, int] = {}
        self._matrix = np.zeros((0, encoder.dimension), dtype=np.float32)
        self.dirty = True
        self.checked_at = 0.0
        self.labelled = 0  # labelled (query, item) pairs: calibration samples

    @property
    def matrix(self) -> np.ndarray:
        return self._matrix[: len(self.entries)]

    def due(self) -> bool:
        return self.dirty or time.monotonic() - self.checked_at > RECHECK_SECONDS

    def refresh(self, store: Store, cached: Callable[[str], np.ndarray | None]) -> int:
        """Read feedback past the watermark; returns how many events were new.

        On PostgreSQL ids are drawn at insert and transactions may commit out of order, so
        the last `LOOKBACK` ids below the watermark are read again (skipping those seen)."""
        self.dirty = False
        self.checked_at = time.monotonic()
        total = 0
        for rows in self._watermark.pages(store, self._page):
            total += len(rows)
            fresh: dict[str, Judged] = {}
            for row in rows:
                judged = self._apply(row, fresh)
                if judged is not None and judged.key not in self._position:
                    fresh[judged.key] = judged
            self._append(list(fresh.values()), cached)
        return total

    def neighbours(
        self, query: np.ndarray, min_similarity: float, rollout: int | None = None, arm: str = ""
    ) -> list[tuple[Judged, float]]:
        """Judged queries at least this similar. With a `rollout`, those judged inside it
        count only for their own `arm` (variant); feedback from before it counts for all."""
        if not self.entries:
            return []
        sims = self.matrix @ np.asarray(query, dtype=np.float32)
        close = np.flatnonzero(sims >= min_similarity)
        return [
            (self.entries[i], float(sims[i]))
            for i in close
            if self.entries[i].labels and _visible(self.entries[i].arm, rollout, arm)
        ]

    def samples(self) -> list[tuple[int, str, int]]:
        """(entry row, item id, accepted) for every labelled shown item."""
        return [
            (row, item, int(value > 0))
            for row, entry in enumerate(self.entries)
            for item, value in entry.labels.items()
        ]

    def _apply(self, row: Any, fresh: dict[str, Judged]) -> Judged | None:
        payload = row.payload or {}
        selected = list(payload.get("selected") or payload.get("items") or [])
        rejected = list(payload.get("rejected") or []) if row.kind == "selection" else []
        if not selected and not rejected:
            return None  # a label with a class or spans: nothing about items
        if row.interaction_id is not None:
            key = row.interaction_id
            judged = self._find(key) or fresh.get(key)
            if judged is None:
                text = query_text(row.interaction_input)
                if text is None:
                    return None
                judged = Judged(key=key, query=text, arm=arm_of(row))
                output = row.output if isinstance(row.output, dict) else {}
                judged.mode = "select" if output.get("mode") == "select" else "search"
                judged.shown = shown_item_ids(output) or []
                judged.proposed = {
                    e["id"]
                    for e in output.get("items", [])
                    if isinstance(e, dict) and e.get("selected") and isinstance(e.get("id"), str)
                }
        else:
            text = query_text(row.input)
            if text is None:
                return None
            judged = Judged(key=f"feedback:{row.id}", query=text, mode="label")
        for item in selected:
            judged.picks[item] = 1.0
        for item in rejected:
            judged.picks[item] = -1.0
        judged.final_given = judged.final_given or bool(selected)
        judged.weight = max(judged.weight, min(1.0, abs(float(row.reward))))
        judged.at = row.timestamp if judged.at is None else max(judged.at, row.timestamp)
        before = len(judged.labels)
        judged.relabel()
        self.labelled += len(judged.labels) - before
        return judged

    def _find(self, key: str) -> Judged | None:
        position = self._position.get(key)
        return None if position is None else self.entries[position]

    def _append(self, fresh: list[Judged], cached: Callable[[str], np.ndarray | None]) -> None:
        """Embed new judged queries (served ones come from the query cache) and add them."""
        if not fresh:
            return
        vectors = np.zeros((len(fresh), self.encoder.dimension), dtype=np.float32)
        missing = []
        for i, judged in enumerate(fresh):
            found = cached(judged.key)
            if found is None:
                missing.append(i)
            else:
                vectors[i] = found
        if missing:
            vectors[missing] = self.encoder.encode([fresh[i].query for i in missing])
        need = len(self.entries) + len(fresh)
        if need > len(self._matrix):
            grown = np.zeros((max(need, 2 * len(self._matrix), 64), vectors.shape[1]), np.float32)
            grown[: len(self.entries)] = self.matrix
            self._matrix = grown
        self._matrix[len(self.entries) : need] = vectors
        for judged in fresh:
            self._position[judged.key] = len(self.entries)
            self.entries.append(judged)


def arm_of(row: Any) -> Arm | None:
    """(rollout id, variant) of the interaction a feedback row judges; None outside one."""
    metadata = row.interaction_metadata if isinstance(row.interaction_metadata, dict) else {}
    note = metadata.get("rollout")
    if not isinstance(note, dict) or not isinstance(note.get("id"), int):
        return None
    return note["id"], row.variant or ""


def _visible(arm: Arm | None, rollout: int | None, variant: str) -> bool:
    if arm is None or rollout is None or arm[0] != rollout:
        return True
    return arm[1] == variant != ""
