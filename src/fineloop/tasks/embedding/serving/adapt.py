"""Instant adaptation: feedback on similar past queries re-ranks results, no retraining.

For a new query q, every judged past query j whose embedding (under the serving version)
has cosine sim_j >= `adaptation_min_similarity` votes on the items it labelled (see
`memory.py` for the labels v_ij in {+1, +SOFT, -SOFT, -1}, SOFT = 0.75):

    E_i = sum_j  (sim_j / sim_nearest) * decay_j * w_j * v_ij
    decay_j = 0.5 ** (age_j / adaptation_half_life_days)   (1 when the half-life is null)
    w_j = |reward| of the judgement (1 for a plain selection or label)

so the closest judged query counts fully and the others in proportion to their similarity,
and an item with evidence moves in logit space:

    logit(p_i') = clip(logit(p_i), -LOGIT_CLIP, +LOGIT_CLIP) + adaptation_strength * E_i

The clip bounds how sure the model may be against a user. With the default strength 4, one
explicit judgement from the nearest query (E = +-1) puts any item on the side of 0.5 the
user chose with a margin of 1.5 logits (p >= 0.82 or <= 0.18), and a soft one (+-0.75) with
0.5 (p >= 0.62 or <= 0.38). Evidence adds up over rounds and users, so the set `select`
returns converges to what users pick. Items without evidence keep their calibrated
probability. Measured on Banking77 intents with MiniLM (25 card intents of 77, a different
paraphrase each round): precision 0.78 -> 1.00 after one answer with min_similarity 0.5;
with the default 0.75 paraphrases often fall below the cut (MiniLM scores them 0.5-0.77).
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from fineloop.policies import ServingPolicy
from fineloop.tasks.embedding.serving.memory import FeedbackMemory

LOGIT_CLIP = 2.5
_EPS = 1e-6


def evidence(
    memory: FeedbackMemory,
    query: np.ndarray,
    policy: ServingPolicy,
    now: datetime | None = None,
    *,
    rollout: int | None = None,
    variant: str | None = None,
) -> dict[str, float]:
    """Item id -> summed, weighted votes of similar judged queries (empty when off).
    `rollout`/`variant`: the rollout arm answering, whose own feedback is all it sees of
    that rollout (when the policy keeps variants apart)."""
    if not policy.online_adaptation or policy.adaptation_strength == 0:
        return {}
    now = now or datetime.now(UTC)
    votes: dict[str, float] = {}
    scoped = rollout if policy.adaptation_per_variant else None
    close = memory.neighbours(query, policy.adaptation_min_similarity, scoped, variant or "")
    nearest = max((similarity for _, similarity in close), default=1.0)
    for judged, similarity in close:
        weight = similarity / nearest * judged.weight * _decay(judged.at, now, policy)
        if weight <= 0:
            continue
        for item, value in judged.labels.items():
            votes[item] = votes.get(item, 0.0) + weight * value
    return {item: vote for item, vote in votes.items() if vote != 0}


def adapt(probabilities: np.ndarray, votes: np.ndarray, strength: float) -> np.ndarray:
    """Move probabilities with evidence in logit space; others are returned unchanged."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _EPS, 1 - _EPS)
    votes = np.asarray(votes, dtype=np.float64)
    logits = np.clip(np.log(p / (1 - p)), -LOGIT_CLIP, LOGIT_CLIP) + strength * votes
    moved = 1.0 / (1.0 + np.exp(-logits))
    return np.where(votes != 0, moved, np.asarray(probabilities, dtype=np.float64))


def _decay(at: datetime | None, now: datetime, policy: ServingPolicy) -> float:
    half_life = policy.adaptation_half_life_days
    if half_life is None or at is None:
        return 1.0
    age_days = max(0.0, (now - at).total_seconds() / 86_400.0)
    return float(0.5 ** (age_days / half_life))
