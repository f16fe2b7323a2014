"""search and select: rank a project's items for a query and log what was shown.

Both: resolve the serving version (the champion, or the rollout variant the request is
assigned to, see rollouts/routing.py), embed the query, take the best items by cosine from the
exact index (plus every item similar past queries judged, so a picked item can climb from
anywhere), calibrate, adapt to feedback, rank by probability (ties by cosine), and log one
interaction whose shown items carry id, score, probability and rank.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from fineloop.errors import Invalid
from fineloop.rollouts.routing import Routed, route
from fineloop.serving.family import Served
from fineloop.serving.interactions import log_interaction
from fineloop.tasks.embedding.serving.adapt import adapt, evidence
from fineloop.tasks.embedding.serving.schemas import (
    Candidate,
    Hit,
    SearchRequest,
    SearchResponse,
    SelectRequest,
    SelectResponse,
)
from fineloop.tasks.embedding.serving.slot import Slot
from fineloop.tasks.embedding.serving.state import TASK, EmbeddingServing

SELECT_MAX = 100
MIN_CANDIDATES = 20
_EXTRA = 10  # over-fetch beyond k, so adaptation has room to promote


@dataclass(frozen=True)
class Ranked:
    rows: list[int]
    scores: np.ndarray
    probabilities: np.ndarray
    adapted: bool
    calibration: str


def search(state: EmbeddingServing, project: str, request: SearchRequest) -> SearchResponse:
    started = time.perf_counter()
    routed = route(state.hub, project, request.version, request.user_id, task=TASK)
    served = routed.served
    query = _query_vector(state, served, request.query)
    ranked = _rank(routed, query, request.k + _EXTRA, request.filters)
    top = list(range(min(request.k, len(ranked.rows))))
    hits = _hits(served, ranked, top)
    output = {
        "mode": "search",
        "k": request.k,
        "filters": request.filters,
        "items": [_shown(hit) for hit in hits],
        "calibration": ranked.calibration,
    }
    interaction_id = _log(state, routed, request.query, output, request.user_id, started, query)
    return SearchResponse(
        interaction_id=interaction_id,
        model_version=served.version.label,
        calibration=ranked.calibration,
        adapted=ranked.adapted,
        variant=routed.variant,
        items=hits,
    )


def select(state: EmbeddingServing, project: str, request: SelectRequest) -> SelectResponse:
    started = time.perf_counter()
    routed = route(state.hub, project, request.version, request.user_id, task=TASK)
    served = routed.served
    threshold = (
        request.threshold
        if request.threshold is not None
        else served.project.policy.select_threshold
    )
    cap = request.max or SELECT_MAX
    query = _query_vector(state, served, request.query)
    ranked = _rank(routed, query, max(2 * cap, MIN_CANDIDATES), request.filters)
    chosen = [i for i in range(len(ranked.rows)) if ranked.probabilities[i] >= threshold][:cap]
    shown = list(range(min(len(ranked.rows), max(2 * len(chosen), MIN_CANDIDATES))))
    picked = set(chosen)
    hits = [
        Candidate(**hit.model_dump(), selected=i in picked)
        for i, hit in zip(shown, _hits(served, ranked, shown), strict=True)
    ]
    output = {
        "mode": "select",
        "threshold": threshold,
        "max": cap,
        "filters": request.filters,
        "selected": [hit.id for hit in hits if hit.selected],
        "items": [_shown(hit) | {"selected": hit.selected} for hit in hits],
        "calibration": ranked.calibration,
    }
    interaction_id = _log(state, routed, request.query, output, request.user_id, started, query)
    return SelectResponse(
        interaction_id=interaction_id,
        model_version=served.version.label,
        calibration=ranked.calibration,
        adapted=ranked.adapted,
        variant=routed.variant,
        threshold=threshold,
        items=[Hit(**hit.model_dump(exclude={"selected"})) for hit in hits if hit.selected],
        candidates=hits,
    )


def _query_vector(state: EmbeddingServing, served: Served[Slot], text: str) -> np.ndarray:
    limit = served.project.policy.max_query_chars
    if len(text) > limit:
        raise Invalid(
            f"query has {len(text)} characters; this project takes at most {limit} "
            "(serving_policy.max_query_chars)",
            field="query",
        )
    if len(served.resource.catalog) == 0:
        raise Invalid(
            f"project {served.project.name!r} has no items to search; upsert them first "
            f"with PUT /v1/projects/{served.project.name}/items",
            field="project",
        )
    vector: np.ndarray = state.ready_predictor(served.version).encode([text])[0]
    return vector


def _rank(routed: Routed, query: np.ndarray, fetch: int, filters: dict[str, Any]) -> Ranked:
    served = routed.served
    slot, policy = served.resource, served.project.policy
    index = slot.catalog.index
    allowed = index.matching(filters)
    found = index.search(query, fetch, allowed)
    # Rows removed by a concurrent refresh between search and here are dropped.
    kept = [(row, score) for row, score in found if row in index.item_of]
    rows = [row for row, _ in kept]
    scores = [score for _, score in kept]
    rollout = routed.note.get("id") if routed.note is not None else None
    votes = evidence(slot.memory, query, policy, rollout=rollout, variant=routed.variant)
    if votes:
        fetched = set(rows)
        permitted = None if allowed is None else set(allowed.tolist())
        extra = [
            row
            for row in (index.row_of.get(item) for item in votes)
            if row is not None and row not in fetched and (permitted is None or row in permitted)
        ]
        if extra:
            rows += extra
            scores += (index.vectors(extra) @ query).tolist()
    score_array = np.asarray(scores, dtype=np.float64)
    calibrator = slot.calibrator
    probabilities = calibrator.probability(score_array)
    item_votes = np.array([votes.get(index.item_of.get(row, ""), 0.0) for row in rows])
    adapted = bool(np.any(item_votes != 0))
    if adapted:
        probabilities = adapt(probabilities, item_votes, policy.adaptation_strength)
    order = np.lexsort((-score_array, -probabilities)) if rows else np.zeros(0, dtype=int)
    return Ranked(
        rows=[rows[i] for i in order],
        scores=score_array[order],
        probabilities=probabilities[order],
        adapted=adapted,
        calibration=calibrator.method,
    )


def _hits(served: Served[Slot], ranked: Ranked, positions: list[int]) -> list[Hit]:
    catalog = served.resource.catalog
    hits = []
    for rank, i in enumerate(positions, start=1):
        row = ranked.rows[i]
        hits.append(
            Hit(
                id=catalog.index.item_of.get(row, ""),
                text=catalog.texts.get(row, ""),
                metadata=catalog.index.metadata.get(row, {}),
                rank=rank,
                score=round(float(ranked.scores[i]), 6),
                probability=round(float(ranked.probabilities[i]), 6),
            )
        )
    return hits


def _shown(hit: Hit) -> dict[str, Any]:
    """A shown item as the interaction records it (no text: the item table has it)."""
    return {"id": hit.id, "score": hit.score, "probability": hit.probability, "rank": hit.rank}


def _log(
    state: EmbeddingServing,
    routed: Routed,
    query: str,
    output: dict[str, Any],
    user_id: str | None,
    started: float,
    vector: np.ndarray,
) -> str:
    interaction_id = log_interaction(
        state.store,
        routed,
        input=query,
        output=output,
        endpoint=output["mode"],
        user_id=user_id,
        started=started,
    )
    state.remember_query(routed.served.version.id, interaction_id, vector)
    return interaction_id
