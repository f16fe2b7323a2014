"""The interaction journal: a served request only appends its interaction to a file, and
still no acknowledged interaction is lost (SIGKILL) nor refused feedback for being early.

The store is inspected through the bare engine where the test must not flush: any session
of the `Store` would first store what its process journaled (read-your-writes)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from conftest import LiveServer
from fineloop.config import Settings
from fineloop.serving.journal import InteractionJournal, journal_of
from fineloop.store import Store
from fineloop.store.schema import Interaction
from serving.helpers import CATALOG, items


def _rows_in_database(store: Store, ids: list[str] | None = None) -> set[str]:
    statement = select(Interaction.id)
    if ids is not None:
        statement = statement.where(Interaction.id.in_(ids))
    with store.engine.connect() as connection:  # not store.read(): that would flush
        return set(connection.scalars(statement))


def _row(interaction_id: str) -> dict[str, object]:
    return {"id": interaction_id, "input": "q", "output": {"items": []}, "metadata": {}}


@pytest.fixture
def slow_journal(settings: Settings, store: Store, client: TestClient) -> InteractionJournal:
    """The app's journal, whose flusher waits an hour: only reads and close() store."""
    client.post("/v1/projects", json={"name": "p", "task": "fake"})
    journal = journal_of(store)
    assert journal is not None
    journal.flush_seconds = 3600
    return journal


def test_a_served_search_is_journaled_then_stored_in_the_background(
    client: TestClient, store: Store, tiny_model: Path
) -> None:
    client.post(
        "/v1/projects", json={"name": "shop", "task": "embedding", "base_model": str(tiny_model)}
    )
    client.put("/v1/projects/shop/items", json={"items": items(CATALOG)})
    ids = [
        client.post("/v1/projects/shop/search", json={"query": f"reset {n}"}).json()[
            "interaction_id"
        ]
        for n in range(5)
    ]
    journal = journal_of(store)
    assert journal is not None
    deadline = time.monotonic() + 30
    while _rows_in_database(store, ids) != set(ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _rows_in_database(store, ids) == set(ids)
    assert journal.stored >= 5 and journal.pending == 0
    assert journal._dir is not None and not list(journal._dir.glob("*.jsonl"))  # segments gone


def test_this_process_reads_its_own_journaled_interactions(
    slow_journal: InteractionJournal, store: Store, client: TestClient
) -> None:
    slow_journal.append("p", [_row("early-1"), _row("early-2")])
    assert _rows_in_database(store, ["early-1", "early-2"]) == set()  # only journaled so far

    thumb = {"kind": "thumb", "value": "up", "interaction_id": "early-2"}
    response = client.post("/v1/projects/p/feedback", json=thumb)

    assert response.status_code == 201, response.text  # not "unknown interaction"
    assert _rows_in_database(store, ["early-1", "early-2"]) == {"early-1", "early-2"}
    assert client.get("/v1/projects/p/interactions/early-1").status_code == 200


def test_a_replayed_or_repeated_interaction_is_stored_once(
    slow_journal: InteractionJournal, store: Store
) -> None:
    slow_journal.append("p", [_row("same")])
    slow_journal.append("p", [_row("same")])
    slow_journal.flush()
    with store.engine.connect() as connection:
        count = connection.scalar(select(func.count()).where(Interaction.id == "same"))
    assert count == 1


def test_a_project_that_no_longer_exists_does_not_block_the_journal(
    slow_journal: InteractionJournal, store: Store
) -> None:
    slow_journal.append("nope", [_row("orphan")])  # e.g. a project renamed meanwhile
    slow_journal.append("p", [_row("kept")])
    slow_journal.flush()
    assert _rows_in_database(store) == {"kept"} and slow_journal.pending == 0


def test_without_the_journal_each_request_stores_its_own(settings: Settings) -> None:
    from fineloop.api import create_app

    plain = settings.model_copy(update={"interaction_journal": False})
    store = Store.open(plain)
    try:
        create_app(plain, store)
        assert journal_of(store) is None
    finally:
        store.close()


_DIE_AFTER_JOURNALING = """
import os, signal, sys
from fineloop.config import Settings
from fineloop.serving.journal import InteractionJournal
from fineloop.store import Store

settings = Settings(data_dir=sys.argv[1], database_url=sys.argv[2] or None)
journal = InteractionJournal(Store.open(settings), settings.data_dir / "journal",
                             flush_seconds=3600)
row = {"input": "q", "output": {"items": []}, "metadata": {}}
journal.append("p", [{**row, "id": "killed-1"}, {**row, "id": "killed-2"}])
print("journaled", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_process_killed_after_journaling_loses_nothing(
    settings: Settings, store: Store, client: TestClient
) -> None:
    client.post("/v1/projects", json={"name": "p", "task": "fake"})
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            _DIE_AFTER_JOURNALING,
            str(settings.data_dir),
            settings.database_url or "",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL and "journaled" in child.stdout, child.stderr
    assert _rows_in_database(store, ["killed-1", "killed-2"]) == set()  # only journaled

    restarted = LiveServer(settings)  # replays the dead process's journal as it starts
    try:
        thumb = {"kind": "thumb", "value": "up", "interaction_id": "killed-2"}
        response = httpx.post(f"{restarted.url}/v1/projects/p/feedback", json=thumb, timeout=30)
    finally:
        restarted.stop()
    assert response.status_code == 201, response.text
    assert _rows_in_database(store, ["killed-1", "killed-2"]) == {"killed-1", "killed-2"}
    assert not list((settings.data_dir / "journal").glob("*/*.jsonl"))  # replayed, removed


def test_searches_answered_before_a_sigkill_are_all_stored(
    settings: Settings, tiny_model: Path
) -> None:
    server = LiveServer(settings, extra_env={"FINELOOP_INTERACTION_FLUSH_SECONDS": "3600"})
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            created = http.post(
                "/v1/projects",
                json={"name": "shop", "task": "embedding", "base_model": str(tiny_model)},
            )
            assert created.status_code == 201, created.text
            assert http.put("/v1/projects/shop/items", json={"items": items(CATALOG)}).is_success
            answers = [
                http.post("/v1/projects/shop/search", json={"query": f"refund {n}"})
                for n in range(6)
            ]
        assert all(a.status_code == 200 for a in answers), answers[0].text
    finally:
        server.kill()
    ids = [a.json()["interaction_id"] for a in answers]

    restarted = LiveServer(settings)
    try:
        with httpx.Client(base_url=restarted.url, timeout=60) as http:
            thumbs = [
                http.post(
                    "/v1/projects/shop/feedback",
                    json={"kind": "thumb", "value": "up", "interaction_id": i},
                )
                for i in ids
            ]
            shown = http.get(f"/v1/projects/shop/interactions/{ids[0]}")
    finally:
        restarted.stop()
    assert [t.status_code for t in thumbs] == [201] * len(ids), thumbs[0].text
    assert shown.status_code == 200 and shown.json()["input"] == "refund 0"


def test_feedback_at_another_server_waits_for_an_interaction_journaled_a_moment_ago(
    settings: Settings, client: TestClient
) -> None:
    from fineloop.api import create_app

    client.post("/v1/projects", json={"name": "p", "task": "fake"})
    other_store = Store.open(settings)  # a second server on the same database
    try:
        create_app(settings, other_store)
        journal = journal_of(other_store)
        assert journal is not None
        journal.flush_seconds = 0.05  # stores it ~50 ms from now, in its own thread
        journal.append("p", [_row("elsewhere")])

        thumb = {"kind": "thumb", "value": "up", "interaction_id": "elsewhere"}
        accepted = client.post("/v1/projects/p/feedback", json=thumb)
        unknown = client.post("/v1/projects/p/feedback", json={**thumb, "interaction_id": "x"})
    finally:
        other_store.close()
    assert accepted.status_code == 201, accepted.text
    assert unknown.status_code == 422 and "unknown interaction" in unknown.text


def test_a_read_during_a_flush_waits_for_the_lines_being_stored(
    slow_journal: InteractionJournal, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_batch = slow_journal._store

    def slow_store(batch: Any) -> None:
        time.sleep(0.5)  # the lines have left `pending` and are not committed yet
        store_batch(batch)

    monkeypatch.setattr(slow_journal, "_store", slow_store)
    slow_journal.append("p", [_row("in-flight")])
    flusher = threading.Thread(target=slow_journal.flush)
    flusher.start()
    time.sleep(0.1)
    assert slow_journal.pending == 0  # taken by the flush in progress

    with store.read() as session:  # the hook waits for that flush
        found = session.scalars(select(Interaction.id).where(Interaction.id == "in-flight"))
        assert list(found) == ["in-flight"]
    flusher.join()
