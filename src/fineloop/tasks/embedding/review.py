"""How unsure a served ranking was, read from what the interaction stored (no model runs):
what the review queue orders embedding interactions by.

A search or select interaction stores its shown items in rank order, each with its cosine
`score` and calibrated `probability` (serving/service.py). The model was least sure where a
top item's probability lies nearest the threshold that decides selection: the select
interaction's own `threshold`, else the project's `serving_policy.select_threshold`. An
interaction logged by an application with scores only (no probabilities) is scored by the
margin between its top two scores instead: a near tie is a guess.
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard

from fineloop.store.interactions import shown_item_ids

TOP = 3  # the top shown items whose probability counts: the ones a user looks at


def ranking_uncertainty(output: Any, select_threshold: float) -> float | None:
    """1 - the distance from the threshold of the nearest top-`TOP` probability (so in
    [0, 1], 1 = exactly at the threshold); without probabilities, 1 - (top-1 score - top-2
    score); None when the output is no ranking or shows fewer than what either needs."""
    if not isinstance(output, dict) or not isinstance(output.get("items"), list):
        return None
    shown = [entry for entry in output["items"] if isinstance(entry, dict)]
    own, threshold = output.get("threshold"), select_threshold
    if output.get("mode") == "select" and _number(own):
        threshold = float(own)  # the threshold that select applied
    probabilities = [e["probability"] for e in shown[:TOP] if _number(e.get("probability"))]
    if probabilities:
        nearest = min(abs(float(p) - threshold) for p in probabilities)
        return round(1.0 - nearest, 6)
    scores = [float(e["score"]) for e in shown[:2] if _number(e.get("score"))]
    if len(scores) < 2:
        return None
    return round(1.0 - abs(scores[0] - scores[1]), 6)


def top_item(output: Any) -> str | None:
    """The first item a ranking showed: what two versions are compared on."""
    shown = shown_item_ids(output)
    return shown[0] if shown else None


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
