"""Logging what a served request showed, the same way for every family: one interaction
with its input and output, the version and rollout variant that answered, the user and the
latency, so feedback can attach to it and rollouts can count it."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fineloop.operations import store_interactions
from fineloop.rollouts.routing import Routed
from fineloop.schemas import InteractionCreate
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
    """Store the interaction (durable before the response leaves) and return its id.
    `started`: `time.perf_counter()` when the request began."""
    interaction_id = interaction_id or uuid.uuid4().hex
    served = routed.served
    metadata: dict[str, Any] = {"endpoint": endpoint}
    if routed.note is not None:
        metadata["rollout"] = routed.note
    spec = InteractionCreate(
        id=interaction_id,
        input=input,
        output=output,
        model_version=served.version.label,
        variant=routed.variant,
        user_id=user_id,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
        metadata=metadata,
    )
    store_interactions(store, served.project.name, [spec])
    return interaction_id
