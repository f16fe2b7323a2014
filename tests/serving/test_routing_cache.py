"""Serving caches the project, its champion and its rollout between changes: two servers
on one database (two apps, each with its own `Store`), a change made on one is served by
the other within `routing_refresh_seconds`, and a server's own change at once.

The fake task (tests/jobs/jobs_fake_task.py) serves here: its model is a small JSON file,
so these tests exercise routing, not model loading."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jobs_fake_task import make_model
from sqlalchemy import event

from fineloop.api import create_app
from fineloop.config import Settings
from fineloop.errors import Invalid, NotFound
from fineloop.registry.aliases import set_alias
from fineloop.registry.versions import register_version, resolve
from fineloop.serving import ServingState, get_serving, routing_cache
from fineloop.store import Store
from fineloop.store.projects import get_project

PROJECT = "scores"
ROUTE = f"/v1/projects/{PROJECT}/fake/score"
REFRESH = 0.3  # the bound under test; the waits below are generous multiples of it
NEVER = 3600.0  # a server that never checks by time: only its own commits refresh it


Server = Callable[[float], TestClient]


@pytest.fixture
def server(settings: Settings) -> Iterator[Server]:
    """Start "servers" on the test's database, each with its own store and refresh."""
    opened: list[tuple[TestClient, Store]] = []

    def start(refresh: float) -> TestClient:
        store = Store.open(settings)
        client = TestClient(
            create_app(settings.model_copy(update={"routing_refresh_seconds": refresh}), store)
        )
        client.__enter__()
        opened.append((client, store))
        return client

    yield start
    for client, store in opened:
        client.__exit__(None, None, None)
        store.close()


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def hub(client: TestClient) -> ServingState:
    return get_serving(client.app)


def store_of(client: TestClient) -> Store:
    found: Store = client.app.state.store
    return found


def make_project(client: TestClient, tmp_path: Path) -> None:
    base = make_model(tmp_path / "base", 0.5)
    body = {"name": PROJECT, "task": "fake", "base_model": str(base)}
    ok(client.post("/v1/projects", json=body), 201)


def add_version(client: TestClient, tmp_path: Path, skill: float) -> str:
    with store_of(client).write() as session:
        found = get_project(session, PROJECT)
        number = len(list(tmp_path.glob("v*"))) + 1
        folder = make_model(tmp_path / f"v{number}", skill)
        version = register_version(
            session, found, artifact_uri=str(folder), base_model=str(folder), gate={}
        )
        return f"v{version.number}"


def score(client: TestClient, **body: Any) -> dict[str, Any]:
    result: dict[str, Any] = ok(client.post(ROUTE, json={"query": "how do I", **body}))
    return result


def champion(client: TestClient) -> str:
    return hub(client).resolve(PROJECT)[1].label


def eventually(check: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not seen in time"
        time.sleep(0.05)


def test_a_promotion_on_another_server_is_served_within_the_refresh_bound(
    server: Server, tmp_path: Path
) -> None:
    a, b = server(REFRESH), server(REFRESH)
    make_project(a, tmp_path)
    assert score(a)["model_version"] == "v0"
    label = add_version(b, tmp_path, 0.9)
    ok(b.post(f"/v1/projects/{PROJECT}/promote", json={"version": label}))
    time.sleep(REFRESH * 1.2)
    assert champion(a) == label  # the first resolution after the bound sees it
    eventually(lambda: score(a)["model_version"] == label)  # once loaded, it answers

    ok(b.post(f"/v1/projects/{PROJECT}/rollback", json={}))
    time.sleep(REFRESH * 1.2)
    assert champion(a) == "v0"
    assert score(a)["model_version"] == "v0"  # still loaded: answers at once


def test_a_servers_own_promotion_and_rollback_are_served_at_once(
    server: Server, tmp_path: Path
) -> None:
    a = server(NEVER)
    make_project(a, tmp_path)
    assert score(a)["model_version"] == "v0"
    label = add_version(a, tmp_path, 0.9)
    ok(a.post(f"/v1/projects/{PROJECT}/promote", json={"version": label}))
    assert champion(a) == label
    hub(a).background.join()  # the promotion started loading the new champion
    assert score(a)["model_version"] == label
    ok(a.post(f"/v1/projects/{PROJECT}/rollback", json={}))
    assert champion(a) == "v0" and score(a)["model_version"] == "v0"


def test_resolving_again_reads_nothing_from_the_store_until_something_changes(
    server: Server, tmp_path: Path
) -> None:
    a = server(NEVER)
    make_project(a, tmp_path)
    score(a, user_id="u1")  # registers v0 as champion: the epoch moves once
    hub(a).resolve(PROJECT, task="fake")
    moved = store_of(a).epoch.local
    score(a, user_id="u1")  # logging an interaction changes nothing serving resolves
    assert store_of(a).epoch.local == moved
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = store_of(a).engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        for _ in range(20):
            hub(a).resolve(PROJECT, task="fake")
            hub(a).rollouts.active(PROJECT)
        assert statements == []
        add_version(a, tmp_path, 0.9)  # a new version moves no alias: nothing to re-read
        statements.clear()
        hub(a).resolve(PROJECT)
        assert statements == []
        with store_of(a).write() as session:  # a project change does
            get_project(session, PROJECT).description = "changed"
        hub(a).resolve(PROJECT)
        assert any("serving_epoch" in s for s in statements)
        assert any("FROM projects" in s for s in statements)
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def test_a_rollout_started_and_ended_on_another_server_is_picked_up(
    server: Server, tmp_path: Path
) -> None:
    a, b = server(REFRESH), server(REFRESH)
    make_project(a, tmp_path)
    assert score(a, user_id="u1")["variant"] is None
    label = add_version(b, tmp_path, 0.9)
    variants = [
        {"name": "control", "target": "champion", "weight": 0},
        {"name": "better", "target": label, "weight": 1},
    ]
    ok(b.put(f"/v1/projects/{PROJECT}/rollout", json={"variants": variants}))
    time.sleep(REFRESH * 1.2)
    assert hub(a).rollouts.active(PROJECT) is not None
    eventually(lambda: score(a, user_id="u1")["model_version"] == label)  # v1 loads first
    assert score(a, user_id="u1")["variant"] == "better"

    ok(b.delete(f"/v1/projects/{PROJECT}/rollout"))
    time.sleep(REFRESH * 1.2)
    answer = score(a, user_id="u1")
    assert answer["variant"] is None and answer["model_version"] == "v0"


def test_alias_moves_and_policy_changes_on_another_server_are_picked_up(
    server: Server, tmp_path: Path
) -> None:
    a, b = server(REFRESH), server(REFRESH)
    make_project(a, tmp_path)
    first, second = add_version(b, tmp_path, 0.7), add_version(b, tmp_path, 0.9)
    with store_of(b).write() as session:
        found = get_project(session, PROJECT)
        set_alias(session, found, "staging", resolve(session, found, first), reason="test")
    time.sleep(REFRESH * 1.2)
    assert hub(a).resolve(PROJECT, "staging")[1].label == first
    with store_of(b).write() as session:
        found = get_project(session, PROJECT)
        set_alias(session, found, "staging", resolve(session, found, second), reason="test")
    time.sleep(REFRESH * 1.2)
    assert hub(a).resolve(PROJECT, "staging")[1].label == second
    assert score(a, version="staging")["model_version"] == second

    before = hub(a).resolve(PROJECT)[0].policy.max_query_chars
    patch = {"serving_policy": {"max_query_chars": before + 1}}
    ok(b.patch(f"/v1/projects/{PROJECT}", json=patch))
    time.sleep(REFRESH * 1.2)
    assert hub(a).resolve(PROJECT)[0].policy.max_query_chars == before + 1


def test_what_was_not_found_is_not_cached(server: Server, tmp_path: Path) -> None:
    a, b = server(NEVER), server(NEVER)
    with pytest.raises(NotFound):
        hub(a).resolve(PROJECT)
    make_project(b, tmp_path)
    assert champion(a) == "v0"  # found at once, though `a` never checks by time
    with pytest.raises(NotFound):
        hub(a).resolve(PROJECT, "v1")
    label = add_version(b, tmp_path, 0.9)
    assert hub(a).resolve(PROJECT, label)[1].label == label


def test_a_cached_project_is_still_refused_to_another_tasks_route(
    server: Server, tmp_path: Path
) -> None:
    a = server(NEVER)
    make_project(a, tmp_path)
    hub(a).resolve(PROJECT, task="fake")
    with pytest.raises(Invalid, match="'fake' project"):
        hub(a).resolve(PROJECT, task="embedding")


def test_the_cache_does_not_grow_without_bound(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routing_cache, "MAX_ENTRIES", 3)
    a = server(NEVER)
    make_project(a, tmp_path)
    labels = [add_version(a, tmp_path, 0.5 + i / 10) for i in range(5)]
    for label in labels:
        assert hub(a).resolve(PROJECT, label)[1].label == label
        assert len(hub(a).routing) <= 3
    assert hub(a).resolve(PROJECT, labels[0])[1].label == labels[0]  # evicted: read again


def test_a_promotion_by_another_process_is_served_within_the_bound(
    server: Server, settings: Settings, tmp_path: Path
) -> None:
    """The CLI in a child process, as an operator would run it next to the server."""
    a = server(REFRESH)
    make_project(a, tmp_path)
    assert champion(a) == "v0"
    label = add_version(a, tmp_path, 0.9)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINELOOP_")}
    env["FINELOOP_DATA_DIR"] = str(settings.data_dir)
    if settings.database_url:
        env["FINELOOP_DATABASE_URL"] = settings.database_url
    command = [sys.executable, "-m", "fineloop", "models", "promote", PROJECT, label]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    time.sleep(REFRESH * 1.2)
    assert champion(a) == label
