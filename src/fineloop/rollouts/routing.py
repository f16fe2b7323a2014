"""Which variant answers a request, and with which version.

Assignment is sticky: a request with a `user_id` lands at a point of [0, 1) given by
SHA-256 of "rollout id:user id" (the same in every process and after restarts), and the
variants own consecutive slices of [0, 1) sized by their weights. Raising a challenger's
weight therefore only moves users towards it. Without a user id the point is random.
A new rollout (new id) reshuffles users.

The control (a target of "champion") is served like any request to the champion. Another
variant's version is served once its family has it ready (embedding: its own index; a
model-only family: its model loaded); while it gets ready in the background the champion
answers, and the interaction records no variant (so it counts
for no one) and `metadata.rollout.fallback` says why. A request naming a `version`, and
every request while no rollout is active, bypasses rollouts.

Project, versions and the active rollout come from the serving state's routing cache
(serving/routing_cache.py), so routing reads nothing from the store while nothing changed.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fineloop.errors import FineloopError
from fineloop.registry.versions import CHAMPION
from fineloop.rollouts.live import ActiveRollout
from fineloop.rollouts.spec import Variant
from fineloop.serving.family import Served
from fineloop.serving.versions import served_version

if TYPE_CHECKING:
    from fineloop.serving.state import ServingState


@dataclass(frozen=True)
class Routed:
    served: Served[Any]
    variant: str | None = None
    note: dict[str, Any] | None = None  # kept as the interaction's metadata["rollout"]


def bucket(rollout_id: int, user_id: str) -> float:
    """A user's fixed point in [0, 1) for one rollout."""
    digest = hashlib.sha256(f"{rollout_id}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def pick(variants: Sequence[Variant], point: float) -> Variant:
    """The variant whose slice of [0, 1) holds `point` (variants of weight 0 own none)."""
    live = [v for v in variants if v.weight > 0]
    total = sum(v.weight for v in live)
    edge = 0.0
    for variant in live:
        edge += variant.weight / total
        if point < edge:
            return variant
    return live[-1]


def assign(rollout: ActiveRollout, user_id: str | None) -> Variant:
    point = random.random() if user_id is None else bucket(rollout.id, user_id)
    return pick(rollout.variants, point)


def route(
    state: ServingState, project: str, version: str | None, user_id: str | None, *, task: str
) -> Routed:
    """Who answers a request to a `task` project: the named version, else the variant the
    user is assigned to, else the champion."""
    if version is not None:
        return Routed(state.serve(project, version, task=task))
    rollouts = state.rollouts
    rollout = rollouts.active(project)
    if rollout is None:
        return Routed(state.serve(project, task=task))
    rollouts.tick(project)
    variant = assign(rollout, user_id)
    note: dict[str, Any] = {
        "id": rollout.id,
        "assigned": variant.name,
        "by": "random" if user_id is None else "user_id",
    }
    if variant.target == CHAMPION:
        return Routed(state.serve(project, task=task), variant.name, note)
    try:
        ref, target = state.resolve(project, variant.target, task=task)
    except FineloopError as error:  # an alias removed under a running rollout
        return Routed(state.serve(project, task=task), None, note | {"fallback": error.message})
    served = state.family(ref.task).serve_ready(ref, target)
    if served is None:
        fallback = f"{target.label} is still getting ready; the champion answered"
        return Routed(state.serve(project, task=task), None, note | {"fallback": fallback})
    return Routed(served, variant.name, note)


def warm(state: ServingState, project: str) -> None:
    """Start getting every non-champion variant ready now (after a PUT)."""
    rollout = state.rollouts.active(project)
    for variant in rollout.variants if rollout is not None else ():
        if variant.target == CHAMPION or variant.weight <= 0:
            continue
        try:
            ref, target = served_version(state.store, project, variant.target)
        except FineloopError:
            continue
        state.family(ref.task).serve_ready(ref, target)
