"""Instant adaptation: feedback on similar past queries re-ranks results, no retraining.

For a new query q, every judged past query j whose embedding (under the serving version)
has cosine sim_j >= `adaptation_min_similarity` votes on the items it labelled (see
`memory.py` for the labels v_ij in {+1, +0.5, -0.5, -1}):

    E_i = sum_j  sim_j * decay_j * w_j * v_ij
    decay_j = 0.5 ** (age_j / adaptation_half_life_days)   (1 when the half-life is null)
    w_j = |reward| of the judgement (1 for a plain selection or label)

and an item with evidence moves in logit space:

    logit(p_i') = clip(logit(p_i), -LOGIT_CLIP, +LOGIT_CLIP) + adaptation_strength * E_i

The clip bounds how sure the model may be against a user: with the default strength 4 one
explicit judgement on the same query (E = +-1) moves any item to the side of 0.5 the user
chose by at least one logit (p >= 0.73 or <= 0.27), and a soft label (+-0.5) does so after
two answers. Evidence adds up over rounds and users, so the set `select` returns converges
to what users pick. Items without evidence keep their calibrated probability.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from fineloop.policies import ServingPolicy
from fineloop.serving.memory import FeedbackMemory

LOGIT_CLIP = 3.0
_EPS = 1e-6


def evidence(
    memory: FeedbackMemory,
    query: np.ndarray,
    policy: ServingPolicy,
    now: datetime | None = None,
) -> dict[str, float]:
    """Item id -> summed, weighted votes of similar judged queries (empty when off)."""
    if not policy.online_adaptation or policy.adaptation_strength == 0:
        return {}
    now = now or datetime.now(UTC)
    votes: dict[str, float] = {}
    for judged, similarity in memory.neighbours(query, policy.adaptation_min_similarity):
        weight = similarity * judged.weight * _decay(judged.at, now, policy)
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
