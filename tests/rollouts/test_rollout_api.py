"""The rollout resource over HTTP, the CLI and the SDK: validation, weights, history."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.test_never_500 import GARBAGE_BODIES, assert_never_500, mutations
from conftest import LiveServer
from fineloop.cli import app as cli
from fineloop.config import Settings
from fineloop.registry.aliases import set_alias
from fineloop.registry.versions import CHAMPION, register_version
from fineloop.sdk import Client, FineloopError
from fineloop.store import Store
from fineloop.store.projects import get_project
from rollouts.conftest import PROJECT, StartRollout, add_version, ok, rollout, search

URL = f"/v1/projects/{PROJECT}/rollout"


def variants(*rows: tuple[str, str, float]) -> list[dict[str, Any]]:
    return [{"name": n, "target": t, "weight": w} for n, t, w in rows]


@pytest.fixture
def with_v1(shop: str, store: Store, tiny_model: Path, tmp_path: Path) -> str:
    return add_version(store, Path(shutil.copytree(tiny_model, tmp_path / "v1")), None)


def test_no_rollout_yet_is_an_empty_inactive_one(client: TestClient, shop: str) -> None:
    found = rollout(client)
    assert (found["id"], found["active"], found["variants"], found["history"]) == (
        None,
        False,
        [],
        [],
    )
    assert found["policy"]["min_samples"] == 100
    assert client.get("/v1/projects/nope/rollout").status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (
            {"variants": variants(("champion", "champion", 0), ("c", "v1", 0))},
            422,
            "weight above 0",
        ),
        ({"variants": variants(("champion", "champion", 1), ("c", "v1", -1))}, 422, "greater than"),
        ({"variants": variants(("x", "champion", 1), ("x", "v1", 1))}, 422, "repeated: ['x']"),
        ({"variants": variants(("champion", "champion", 1))}, 422, "at least 2"),
        (
            {"variants": variants(*[(f"v{i}", "champion", 1) for i in range(5)])},
            422,
            "at most 4",
        ),
        ({"variants": variants(("champion", "champion", 1), ("c", "v9", 1))}, 404, "'v9'"),
        ({"variants": variants(("a", "v1", 1), ("b", "champion", 1))}, 422, "must serve the champ"),
        ({"variants": variants(("bad name", "champion", 1), ("c", "v1", 1))}, 422, "pattern"),
        (
            {"variants": variants(("a", "champion", 1), ("c", "v1", 1)), "policy": {"alpha": 2}},
            422,
            "alpha",
        ),
        ({"variants": variants(("a", "champion", 1), ("c", "v1", 1)), "extra": 1}, 422, "extra"),
        ({"variants": variants(("a", "champion", float("nan")), ("c", "v1", 1))}, 422, "weight"),
    ],
)
def test_bad_rollouts_are_refused_with_a_message(
    client: TestClient, with_v1: str, body: dict[str, Any], status: int, says: str
) -> None:
    response = client.put(URL, content=_json(body), headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert says in response.text
    assert rollout(client)["id"] is None  # nothing was stored


def _json(body: dict[str, Any]) -> str:
    return json.dumps(body)  # NaN travels as the bare token NaN, as a careless client sends it


def test_weights_are_normalised_and_changes_are_recorded(client: TestClient, with_v1: str) -> None:
    started = ok(
        client.put(URL, json={"variants": variants(("champion", "champion", 9), ("c", "v1", 1))})
    )
    assert [(v["name"], v["version"], v["weight"]) for v in started["variants"]] == [
        ("champion", "v0", 0.9),
        ("c", "v1", 0.1),
    ]
    same = ok(
        client.put(URL, json={"variants": variants(("champion", "champion", 9), ("c", "v1", 1))})
    )
    assert len(same["history"]) == 1  # nothing changed, nothing recorded
    body = {"variants": variants(("champion", "champion", 1), ("c", "v1", 1)), "reason": "ramp"}
    ramped = ok(client.put(URL, json=body))
    assert ramped["id"] == started["id"]
    assert [(h["action"], h["reason"], h["weights"]) for h in ramped["history"]] == [
        ("start", "rollout started", {"champion": 0.9, "c": 0.1}),
        ("weights", "ramp", {"champion": 0.5, "c": 0.5}),
    ]
    replaced = ok(
        client.put(URL, json={"variants": variants(("champion", "champion", 1), ("d", "v1", 1))})
    )
    assert replaced["id"] != started["id"] and replaced["active"]
    ended = ok(client.delete(URL))
    assert not ended["active"] and ended["history"][-1]["action"] == "end"
    assert client.delete(URL).status_code == 404
    assert search(client, "refund", user_id="u")["variant"] is None


def test_the_cli_sets_shows_and_ends_a_rollout(
    client: TestClient, with_v1: str, settings: Settings
) -> None:
    env = {"FINELOOP_DATA_DIR": str(settings.data_dir)}
    if settings.database_url:
        env["FINELOOP_DATABASE_URL"] = settings.database_url
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(cli, ["rollout", *args], env=env)
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())

    shown = run("set", PROJECT, "--challenger", "v1", "--share", "0.2", "--min-samples", "50")
    assert "challenger │ v1 │ v1 │ 0.200" in shown
    assert rollout(client)["policy"]["min_samples"] == 50
    run("set", PROJECT, "--variant", "champion=champion:3", "--variant", "challenger=v1:1")
    assert [v["weight"] for v in rollout(client)["variants"]] == [0.75, 0.25]
    assert "weights set by hand" in run("show", PROJECT)
    assert "no action" in run("evaluate", PROJECT)
    assert "ended" in run("end", PROJECT, "--reason", "seen enough")
    assert rollout(client)["history"][-1]["reason"] == "seen enough"
    bad = runner.invoke(cli, ["rollout", "set", PROJECT, "--variant", "x=v1"], env=env)
    assert bad.exit_code == 2 and "NAME=TARGET:WEIGHT" in bad.output
    missing = runner.invoke(cli, ["rollout", "set", PROJECT, "--challenger", "v7"], env=env)
    assert missing.exit_code == 1 and "'v7'" in missing.output


def test_the_sdk_reads_changes_evaluates_and_ends_a_rollout(
    settings: Settings, start_rollout: StartRollout
) -> None:
    start_rollout((0.5, 0.5))
    server = LiveServer(settings)
    try:
        with Client(server.url) as sdk:
            found = sdk.rollout(PROJECT)
            assert found["active"] and len(found["variants"]) == 2
            changed = sdk.set_rollout(
                PROJECT,
                variants(("champion", "champion", 0), ("challenger", "v1", 1)),
                policy={"min_samples": 20},
                reason="all in",
            )
            assert changed["history"][-1]["reason"] == "all in"
            with pytest.raises(FineloopError) as refused:
                sdk.set_rollout(PROJECT, variants(("champion", "champion", 1), ("c", "v5", 1)))
            assert refused.value.status == 404
            assert sdk.evaluate_rollout(PROJECT)["actions"] == []
            assert not sdk.end_rollout(PROJECT, reason="bye")["active"]
    finally:
        server.stop()


def test_garbage_to_the_rollout_route_is_never_a_500(
    client: TestClient, project: str, store: Store
) -> None:
    with store.write() as session:
        found = get_project(session, project)
        for number in (0, 1):
            version = register_version(session, found, artifact_uri="/m", base_model="/m")
            if number == 0:
                set_alias(session, found, CHAMPION, version, reason="test")
    valid = {
        "variants": variants(("champion", "champion", 0.9), ("challenger", "v1", 0.1)),
        "policy": {"metric": "mean_reward", "min_samples": 10, "alpha": 0.1},
        "reason": "r",
    }
    url = f"/v1/projects/{project}/rollout"
    bodies = itertools.chain(GARBAGE_BODIES, mutations([valid]))

    assert assert_never_500(client, "PUT", url, bodies) > len(GARBAGE_BODIES)
    assert client.delete(f"{url}?reason={'x' * 3000}").status_code == 422
