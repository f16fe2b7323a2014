"""Feedback events as plain dicts, for the common kinds; any other field goes in `**extra`
(user_id, idempotency_key, timestamp, difficulty, input, metadata)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def thumb(interaction_id: str, up: bool, **extra: Any) -> dict[str, Any]:
    value = "up" if up else "down"
    return {"kind": "thumb", "interaction_id": interaction_id, "value": value} | extra


def rating(interaction_id: str, value: float, **extra: Any) -> dict[str, Any]:
    return {"kind": "rating", "interaction_id": interaction_id, "value": value} | extra


def selection(
    interaction_id: str, selected: Iterable[str], rejected: Iterable[str] = (), **extra: Any
) -> dict[str, Any]:
    return {
        "kind": "selection",
        "interaction_id": interaction_id,
        "selected": list(selected),
        "rejected": list(rejected),
    } | extra


def correction(interaction_id: str, output: Any, **extra: Any) -> dict[str, Any]:
    return {"kind": "correction", "interaction_id": interaction_id, "output": output} | extra
