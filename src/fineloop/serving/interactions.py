"""Logging what a served request showed, the same way for every family: one interaction
with its input and output, the version and rollout variant that answered, the user and the
latency, so feedback can attach to it and rollouts can count it. With the interaction
journal on (the default) the request only appends to it (serving/journal.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from fineloop.operations import store_interactions
from fineloop.rollouts.routing import Routed
from fineloop.schemas import InteractionCreate
from fineloop.serving.journal import journal_of
from fineloop.store import Store


def log_interaction(
    store: Store,
    routed: Routed,
    *,
    input: Any,
    output: Any,
    endpoint: str,
    user_id: str | None,
    started: float,
    interaction_id: str | None = None,
) -> str:
    """Log the interaction (durable before the response leaves) and return its id.
    `started`: `time.perf_counter()` when the request began."""
    (logged,) = log_interactions(
        store,
        routed,
        [(input, output)],
        endpoint=endpoint,
        user_id=user_id,
        started=started,
        ids=[interaction_id or uuid.uuid4().hex],
    )
    return logged


def log_interactions(
    store: Store,
    routed: Routed,
    shown: Sequence[tuple[Any, Any]],
    *,
    endpoint: str,
    user_id: str | None,
    started: float,
    metadata: Mapping[str, Any] | None = None,
    ids: Sequence[str] | None = None,
) -> list[str]:
    """Store one interaction per (input, output) of a batch request in one write and return
    their ids; `metadata` is the request's own, kept beside the endpoint and rollout note."""
    served = routed.served
    extra: dict[str, Any] = {**(metadata or {}), "endpoint": endpoint}
    if routed.note is not None:
        extra["rollout"] = routed.note
    latency = round((time.perf_counter() - started) * 1000, 3)
    chosen = list(ids) if ids is not None else [uuid.uuid4().hex for _ in shown]
    journal = journal_of(store)
    if journal is not None:  # the request's outputs were built by the server: valid as is
        created = datetime.now(UTC).isoformat()
        common = {
            "model_version": served.version.label,
            "variant": routed.variant,
            "user_id": user_id,
            "latency_ms": latency,
            "metadata": extra,
            "created_at": created,
        }
        rows = [
            {"id": interaction_id, "input": input, "output": output, **common}
            for interaction_id, (input, output) in zip(chosen, shown, strict=True)
        ]
        journal.append(served.project.name, rows)
        return chosen
    specs = [
        InteractionCreate(
            id=interaction_id,
            input=input,
            output=output,
            model_version=served.version.label,
            variant=routed.variant,
            user_id=user_id,
            latency_ms=latency,
            metadata=extra,
        )
        for interaction_id, (input, output) in zip(chosen, shown, strict=True)
    ]
    store_interactions(store, served.project.name, specs)
    return chosen
