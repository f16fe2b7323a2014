"""The policy acts on significance: a clearly worse challenger is rolled back, a clearly
better one is promoted only if it passed the offline gate; each action is in the history."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fineloop.jobs import triggers
from fineloop.serving import get_serving
from fineloop.store import Store
from rollouts.conftest import (
    FAILED,
    PASSED,
    PROJECT,
    StartRollout,
    add_version,
    ok,
    pick,
    rollout,
    search,
    thumb,
    traffic,
)

FAST = {"min_samples": 8, "alpha": 0.05, "debounce_seconds": 0}


def judge_all(client: TestClient, users: int, *, challenger_accepts: bool) -> None:
    """Serve every user first, then send feedback: the policy sees it arrive one by one."""
    for answer in traffic(client, users):
        better = (answer["variant"] == "challenger") == challenger_accepts
        pick(client, answer, top=better)
    get_serving(client.app).background.join()  # the debounced evaluations have run


def test_a_clearly_worse_challenger_is_rolled_back_with_its_reason(
    client: TestClient, start_rollout: StartRollout
) -> None:
    start_rollout((0.5, 0.5), **FAST)
    judge_all(client, 60, challenger_accepts=False)

    found = rollout(client)
    assert not found["active"]
    actions = [(h["action"], h["actor"]) for h in found["history"]]
    assert actions == [("start", "user"), ("rollback", "policy")]
    last = found["history"][-1]
    assert last["weights"] == {"champion": 1.0, "challenger": 0.0}
    assert "challenger is significantly worse than champion on acceptance_rate" in last["reason"]
    assert "rollout ended" in last["reason"]
    assert last["details"]["comparisons"][0]["p_value"] < 0.05
    assert found["variants"][1]["weight"] == 0.0
    after = [search(client, "refund", user_id=f"u{i}") for i in range(10)]
    assert {(a["variant"], a["model_version"]) for a in after} == {(None, "v0")}


def test_a_clearly_better_challenger_that_passed_the_gate_is_promoted(
    client: TestClient, start_rollout: StartRollout
) -> None:
    start_rollout((0.5, 0.5), gate=PASSED, **FAST)
    judge_all(client, 60, challenger_accepts=True)

    found = rollout(client)
    assert not found["active"]
    last = found["history"][-1]
    assert (last["action"], last["actor"]) == ("promote", "policy")
    assert "challenger is significantly better than champion" in last["reason"]
    assert "v1 passed the offline gate: promoted to champion" in last["reason"]
    assert ok(client.get(f"/v1/projects/{PROJECT}/versions/champion"))["version"] == "v1"
    moves = ok(client.get(f"/v1/projects/{PROJECT}/aliases/history"))
    assert moves[-1]["actor"] == "policy" and moves[-1]["version"] == "v1"
    assert "rollout" in moves[-1]["reason"]
    get_serving(client.app).background.join()
    answer = search(client, "refund", user_id="u1")
    assert (answer["variant"], answer["model_version"]) == (None, "v1")


def test_a_better_challenger_that_failed_the_gate_is_held_not_promoted(
    client: TestClient, start_rollout: StartRollout
) -> None:
    start_rollout((0.5, 0.5), gate=FAILED, **FAST)
    judge_all(client, 60, challenger_accepts=True)
    ok(client.post(f"/v1/projects/{PROJECT}/rollout/evaluate"))  # once more: no second note

    found = rollout(client)
    assert found["active"]
    assert found["comparison"]["significant"] and found["comparison"]["better"] == "challenger"
    assert [h["action"] for h in found["history"]] == ["start", "hold"]
    assert "did not pass the offline gate" in found["history"][-1]["reason"]
    assert ok(client.get(f"/v1/projects/{PROJECT}/versions/champion"))["version"] == "v0"


def test_nothing_happens_below_min_samples_or_with_the_policy_off(
    client: TestClient, start_rollout: StartRollout
) -> None:
    start_rollout((0.5, 0.5), min_samples=1000, debounce_seconds=0)
    judge_all(client, 40, challenger_accepts=False)
    found = rollout(client)
    assert found["active"] and [h["action"] for h in found["history"]] == ["start"]
    comparison = found["comparison"]
    assert comparison["p_value"] < 0.05
    assert not comparison["enough_samples"] and not comparison["significant"]

    off = ok(
        client.put(
            f"/v1/projects/{PROJECT}/rollout",
            json={
                "variants": [
                    {"name": "champion", "target": "champion", "weight": 0.5},
                    {"name": "challenger", "target": "v1", "weight": 0.5},
                ],
                "policy": FAST | {"auto_rollback": False},
            },
        )
    )
    assert [h["action"] for h in off["history"]] == ["start", "policy"]
    taken = ok(client.post(f"/v1/projects/{PROJECT}/rollout/evaluate"))
    assert taken["actions"] == [] and taken["rollout"]["active"]
    assert taken["rollout"]["comparison"]["significant"]


def test_mean_reward_decides_with_welch_and_one_of_two_challengers_is_dropped(
    client: TestClient, start_rollout: StartRollout, store: Store, tiny_model: Path, tmp_path: Path
) -> None:
    start_rollout((0.5, 0.5))  # registers v1
    v2 = add_version(store, Path(shutil.copytree(tiny_model, tmp_path / "other")), None)
    ok(
        client.put(
            f"/v1/projects/{PROJECT}/rollout",
            json={
                "variants": [
                    {"name": "champion", "target": "champion", "weight": 2},
                    {"name": "bad", "target": "v1", "weight": 1},
                    {"name": "same", "target": v2, "weight": 1},
                ],
                "policy": FAST | {"metric": "mean_reward"},
            },
        )
    )
    get_serving(client.app).background.join()
    for i, answer in enumerate(traffic(client, 90)):
        thumb(client, answer, up=answer["variant"] != "bad" or i % 7 == 0)
    get_serving(client.app).background.join()

    found = rollout(client)
    assert found["active"]
    last = found["history"][-1]
    assert (last["action"], last["actor"]) == ("rollback", "policy")
    assert "bad is significantly worse than champion on mean_reward" in last["reason"]
    assert "welch test" in last["reason"] and "rollout ended" not in last["reason"]
    assert last["weights"] == {"champion": 0.75, "bad": 0.0, "same": 0.25}
    later = {search(client, "refund", user_id=f"w{i}")["variant"] for i in range(30)}
    assert later == {"champion", "same"}


def test_the_periodic_loop_of_serve_acts_when_feedback_did_not_wake_the_policy(
    client: TestClient, start_rollout: StartRollout, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feedback that reaches another server never wakes this one's policy: `serve`'s
    trigger loop still evaluates every active rollout now and then."""
    start_rollout((0.5, 0.5), **(FAST | {"debounce_seconds": 3600}))
    judge_all(client, 60, challenger_accepts=False)
    assert rollout(client)["active"], "the debounce kept the feedback path from deciding"

    monkeypatch.setattr(triggers, "ROLLOUT_EVERY", 0.0)
    triggers.TriggerLoop(store).evaluate_rollouts()

    found = rollout(client)
    assert not found["active"]
    assert [(h["action"], h["actor"]) for h in found["history"]][-1] == ("rollback", "policy")
