"""During a rollout, instant adaptation keeps each variant to its own users' feedback, so
the variants do not learn from each other and the A/B test compares the models."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from rollouts.conftest import PROJECT, StartRollout, ok, pick, search

QUERY = "reset my password"


def user_of(client: TestClient, variant: str) -> str:
    """A user id the rollout assigns to `variant`."""
    for i in range(200):
        if search(client, "invoice", user_id=f"u{i}")["variant"] == variant:
            return f"u{i}"
    raise AssertionError(f"no user lands on {variant}")


def order(answer: dict[str, Any]) -> list[str]:
    return [hit["id"] for hit in answer["items"]]


def test_feedback_on_one_variant_adapts_that_variant_only(
    client: TestClient, start_rollout: StartRollout
) -> None:
    start_rollout((0.5, 0.5))
    on_champion, on_challenger = user_of(client, "champion"), user_of(client, "challenger")
    before = search(client, QUERY, user_id=on_challenger)
    assert not before["adapted"]

    first = search(client, QUERY, user_id=on_champion)
    pick(client, first, top=False)  # the champion's user wants its second result
    wanted = order(first)[1]

    champion = search(client, QUERY, user_id=on_champion)
    assert champion["adapted"] and order(champion)[0] == wanted
    challenger = search(client, QUERY, user_id=on_challenger)
    assert not challenger["adapted"]
    assert order(challenger) == order(before)

    # A request naming a version stands outside the rollout: it sees all feedback.
    assert search(client, QUERY, version="v1")["adapted"]

    # Pooled on request: the challenger then learns from the champion's users too.
    body = {"serving_policy": {"adaptation_per_variant": False}}
    ok(client.patch(f"/v1/projects/{PROJECT}", json=body))
    pooled = search(client, QUERY, user_id=on_challenger)
    assert pooled["adapted"] and order(pooled)[0] == wanted


def test_after_the_rollout_its_feedback_counts_for_everyone(
    client: TestClient, start_rollout: StartRollout
) -> None:
    start_rollout((0.0, 1.0))
    first = search(client, QUERY, user_id="someone")
    assert first["variant"] == "challenger"
    pick(client, first, top=False)
    ok(client.delete(f"/v1/projects/{PROJECT}/rollout", params={"reason": "done"}))
    after = search(client, QUERY, user_id="someone")
    assert after["variant"] is None and after["adapted"]
    assert order(after)[0] == order(first)[1]
