"""Requests are split between variants: sticky by user id, in proportion to the weights,
every interaction recording the variant that answered."""

from __future__ import annotations

import hashlib
import math
import shutil
import threading
from collections import Counter
from pathlib import Path

from fastapi.testclient import TestClient

from fineloop.api import create_app
from fineloop.config import Settings
from fineloop.rollouts.routing import bucket, pick
from fineloop.rollouts.spec import Variant
from fineloop.serving import get_serving
from fineloop.store import Store
from rollouts.conftest import PROJECT, StartRollout, add_version, interaction, ok, search


def within_binomial(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_a_users_point_is_sha256_of_rollout_and_user() -> None:
    digest = hashlib.sha256(b"7:alice").hexdigest()
    assert bucket(7, "alice") == int(digest[:16], 16) / 2**64
    assert bucket(7, "alice") != bucket(8, "alice")  # a new rollout reshuffles users


def test_the_split_over_many_users_follows_the_weights() -> None:
    variants = [Variant("a", "champion", 0.7), Variant("b", "v1", 0.2), Variant("c", "v2", 0.1)]
    counts = Counter(pick(variants, bucket(3, f"user-{i}")).name for i in range(5000))
    for variant in variants:
        assert within_binomial(counts[variant.name], 5000, variant.weight)
    paused = [Variant("a", "champion", 1.0), Variant("b", "v1", 0.0)]
    assert {pick(paused, bucket(3, f"user-{i}")).name for i in range(500)} == {"a"}


def test_raising_a_weight_only_moves_users_towards_that_variant() -> None:
    before = [Variant("a", "champion", 0.9), Variant("b", "v1", 0.1)]
    after = [Variant("a", "champion", 0.7), Variant("b", "v1", 0.3)]
    for i in range(2000):
        point = bucket(5, f"u{i}")
        if pick(before, point).name == "b":
            assert pick(after, point).name == "b"


def test_same_user_same_variant_across_calls_and_a_fresh_app(
    client: TestClient, start_rollout: StartRollout, settings: Settings, store: Store
) -> None:
    start_rollout((0.5, 0.5))
    first = {f"u{i}": search(client, "reset my password", user_id=f"u{i}") for i in range(40)}
    again = {user: search(client, "refund", user_id=user) for user in first}
    with TestClient(create_app(settings, store)) as fresh:
        fresh_ids = {
            user: ok(
                fresh.post(
                    f"/v1/projects/{PROJECT}/search", json={"query": "cancel", "user_id": user}
                )
            )["interaction_id"]
            for user in first
        }
        get_serving(fresh.app).background.join()
    variants = {user: answer["variant"] for user, answer in first.items()}
    assert set(variants.values()) == {"champion", "challenger"}
    assert {user: a["variant"] for user, a in again.items()} == variants
    # The fresh app builds v1's index first (the champion answers meanwhile), so compare
    # the assignment each interaction recorded.
    for user, interaction_id in fresh_ids.items():
        assert (
            interaction(client, interaction_id)["metadata"]["rollout"]["assigned"]
            == (variants[user])
        )
    for answer in first.values():
        assert answer["model_version"] == ("v0" if answer["variant"] == "champion" else "v1")


def test_interactions_record_variant_version_and_assignment(
    client: TestClient, start_rollout: StartRollout
) -> None:
    started = start_rollout((0.3, 0.7))
    answers = [search(client, "invoice", user_id=f"user-{i}") for i in range(200)]
    counts = Counter(a["variant"] for a in answers)
    assert within_binomial(counts["challenger"], 200, 0.7)
    for answer in answers[:20]:
        logged = interaction(client, answer["interaction_id"])
        assert logged["variant"] == answer["variant"]
        assert logged["model_version"] == answer["model_version"]
        assert logged["metadata"]["rollout"] == {
            "id": started["id"],
            "assigned": answer["variant"],
            "by": "user_id",
        }
    random = Counter(search(client, "invoice")["variant"] for _ in range(60))
    assert set(random) == {"champion", "challenger"}


def test_select_is_routed_too(client: TestClient, start_rollout: StartRollout) -> None:
    start_rollout((0.0, 1.0))
    answer = ok(
        client.post(f"/v1/projects/{PROJECT}/select", json={"query": "refund", "user_id": "x"})
    )
    assert (answer["variant"], answer["model_version"]) == ("challenger", "v1")
    assert interaction(client, answer["interaction_id"])["variant"] == "challenger"


def test_the_champion_answers_while_the_challengers_index_builds(
    client: TestClient, shop: str, store: Store, tiny_model: Path, tmp_path: Path
) -> None:
    label = add_version(store, Path(shutil.copytree(tiny_model, tmp_path / "v1")), None)
    serving = get_serving(client.app)
    gate = threading.Event()
    serving.background.submit(lambda: gate.wait(30))  # hold the worker: the build must queue
    variants = [
        {"name": "champion", "target": "champion", "weight": 0},
        {"name": "fresh", "target": label, "weight": 1},
    ]
    ok(client.put(f"/v1/projects/{PROJECT}/rollout", json={"variants": variants}))
    during = search(client, "refund", user_id="a")
    gate.set()
    serving.background.join()
    after = search(client, "refund", user_id="a")

    assert (during["variant"], during["model_version"]) == (None, "v0")
    note = interaction(client, during["interaction_id"])["metadata"]["rollout"]
    assert note["assigned"] == "fresh"
    assert "v1 is still getting ready" in note["fallback"]
    assert (after["variant"], after["model_version"]) == ("fresh", "v1")


def test_a_named_version_or_an_ended_rollout_bypasses_routing(
    client: TestClient, start_rollout: StartRollout
) -> None:
    start_rollout((0.0, 1.0))
    assert search(client, "refund", version="v0")["variant"] is None
    assert search(client, "refund", user_id="z")["variant"] == "challenger"
    ended = ok(client.delete(f"/v1/projects/{PROJECT}/rollout", params={"reason": "done"}))
    assert not ended["active"] and ended["history"][-1]["reason"] == "done"
    answer = search(client, "refund", user_id="z")
    assert (answer["variant"], answer["model_version"]) == (None, "v0")
    assert "rollout" not in interaction(client, answer["interaction_id"])["metadata"]
