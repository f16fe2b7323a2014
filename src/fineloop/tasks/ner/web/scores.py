"""Entity scores per type, base / champion / candidate side by side, from what a training
run recorded (`Comparison.as_metrics`: each model's metrics from `ner/evaluate.py`, with
f1_<TYPE>, precision_<TYPE>, recall_<TYPE>, support_<TYPE> and the overall f1, precision,
recall)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MODELS = ("base", "champion", "candidate")
SCORES = ("f1", "precision", "recall")


def score_table(
    metrics: Any, types: Sequence[str], palette: Mapping[str, str], candidate: str
) -> dict[str, Any] | None:
    """Rows per entity type (the project's order, then any other type the evaluation
    found) and an overall row, one column per model; None before any NER evaluation.
    `candidate` names the candidate's column (its version, or "candidate")."""
    if not isinstance(metrics, dict) or not isinstance(metrics.get("candidate"), dict):
        return None
    models = {key: _numbers(metrics.get(key)) for key in MODELS}
    if "f1" not in models["candidate"]:
        return None
    found = [
        k.removeprefix("support_") for m in models.values() for k in m if k.startswith("support_")
    ]
    names = list(dict.fromkeys([*types, *sorted(set(found) - set(types))]))
    base, champion = metrics.get("base_version", "v0"), metrics.get("champion_version", "?")
    return {
        "columns": [f"{base} (base)", f"{champion} (champion)", candidate],
        "rows": [_row(name, models, palette.get(name)) for name in names],
        "overall": _row(None, models, None),
    }


def _row(
    name: str | None, models: dict[str, dict[str, float]], colour: str | None
) -> dict[str, Any]:
    suffix = "" if name is None else f"_{name}"
    cells = [{score: m.get(score + suffix) for score in SCORES} for m in models.values()]
    f1s = [c["f1"] for c in cells if c["f1"] is not None]
    # the examples of this type in the split: the same for every model, read off whichever has it
    supports = [m[f"support{suffix}"] for m in models.values() if f"support{suffix}" in m]
    support = supports[-1] if supports else None
    candidate, champion = cells[2]["f1"], cells[1]["f1"]
    return {
        "type": name,
        "colour": colour,
        "support": None if support is None else int(support),
        "cells": cells,
        "best": max(f1s) if f1s else None,
        "vs_champion": None if candidate is None or champion is None else candidate - champion,
    }


def _numbers(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {
        k: float(v)
        for k, v in value.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
