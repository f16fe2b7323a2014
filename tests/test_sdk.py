"""The Python SDK against a real `fineloop serve`: every call, its errors, and the
background logger (batching, flushing, exit, retries, invalid rows)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import conftest
from conftest import DATASETS, LiveServer
from fineloop import BufferedLogger, Client, FineloopError
from fineloop.config import Settings

ADMIN_KEY = "admin-secret-0123456789abcdefghijklmn"
INGEST_KEY = "ingest-secret-0123456789abcdefghijklmn"


@pytest.fixture
def sdk(live_server: LiveServer) -> Iterator[Client]:
    with Client(live_server.url) as client:
        yield client


@pytest.fixture
def faq(sdk: Client) -> str:
    sdk.create_project("faq", "embedding")
    return "faq"


def wait_until(condition: Callable[[], bool], what: str, deadline: float = 60.0) -> None:
    """Poll instead of sleeping a guessed time: background work finishes when it finishes."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def stored(client: Client, project: str) -> int:
    return int(client.stats(project)["total"])


def thumbs(count: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"kind": "thumb", "input": f"query {i}", "value": "up"} | extra for i in range(count)]


# Projects, items, interactions


def test_projects_are_created_listed_fetched_and_updated(sdk: Client) -> None:
    assert sdk.health()["status"] == "ok"
    created = sdk.create_project(
        "support", "fake", description="helpdesk", reward_policy={"thumb_down": -0.5}
    )
    assert created["reward_policy"]["thumb_down"] == -0.5
    sdk.create_project("faq", "embedding")
    assert [p["name"] for p in sdk.list_projects()] == ["faq", "support"]
    assert sdk.get_project("support")["description"] == "helpdesk"
    updated = sdk.update_project("support", description="tier 1")
    assert updated["description"] == "tier 1"
    assert updated["reward_policy"]["thumb_down"] == -0.5


def test_errors_carry_the_status_code_and_message_of_the_server(sdk: Client, faq: str) -> None:
    with pytest.raises(FineloopError) as missing:
        sdk.get_project("nope")
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    assert "nope" in str(missing.value)

    with pytest.raises(FineloopError) as twice:
        sdk.create_project("faq", "embedding")
    assert twice.value.status == 409

    with pytest.raises(FineloopError) as invalid:
        sdk.send_feedback(faq, {"kind": "thumb", "input": "q", "value": "sideways"})
    assert invalid.value.status == 422
    assert str(invalid.value).startswith("value:")

    with pytest.raises(FineloopError) as unknown:
        sdk.thumb("nope", "some-interaction", up=True)
    assert unknown.value.status == 404
    assert "nope" in unknown.value.message


def test_an_unreachable_server_is_a_fineloop_error_with_status_0() -> None:
    url = f"http://127.0.0.1:{conftest.free_port()}"
    with Client(url, retries=1, backoff=0) as client, pytest.raises(FineloopError) as error:
        client.list_projects()
    assert (error.value.status, error.value.code) == (0, "unreachable")
    assert "cannot reach" in str(error.value)


def test_items_are_upserted_in_requests_the_server_accepts(
    live_server: LiveServer, faq: str
) -> None:
    with Client(live_server.url, batch_size=3) as small_batches:
        items = [{"id": f"doc-{i}", "text": f"answer {i}"} for i in range(7)]
        assert small_batches.upsert_items(faq, items) == 7
        assert (
            small_batches.upsert_items(faq, [{"id": "doc-0", "text": "new", "metadata": {}}]) == 1
        )
        listed = list(small_batches.list_items(faq, page_size=2))
        assert [item["id"] for item in listed] == [f"doc-{i}" for i in range(7)]
        assert small_batches.get_item(faq, "doc-0")["text"] == "new"


def test_interactions_get_ids_and_can_be_read_back(sdk: Client, faq: str) -> None:
    shown = {"items": [{"id": "doc-1", "score": 0.9}, {"id": "doc-2", "score": 0.4}]}
    generated = sdk.log_interaction(faq, {"query": "reset password"}, shown, latency_ms=12.5)
    mine = sdk.log_interaction(faq, "q", "a", id="call-1", model_version="v1", variant="b")
    assert mine == "call-1"
    assert sdk.log_interaction(faq, "q", "other", id="call-1") == "call-1"  # first one is kept
    assert sdk.get_interaction(faq, generated)["output"] == shown
    assert sdk.get_interaction(faq, "call-1")["output"] == "a"
    assert {i["id"] for i in sdk.list_interactions(faq)} == {generated, "call-1"}
    ids = sdk.log_interactions(faq, [{"input": "x", "output": "y"}, {"input": "z", "output": "w"}])
    assert len(set(ids)) == 2
    assert len(sdk.list_interactions(faq, limit=10)) == 4


# Feedback


def test_every_feedback_helper_stores_its_kind_and_reward(sdk: Client, faq: str) -> None:
    shown = {"items": [{"id": "doc-1"}, {"id": "doc-2"}, {"id": "doc-3"}]}
    call = sdk.log_interaction(faq, {"query": "refund"}, shown)
    assert sdk.thumb(faq, call, up=True, user_id="u1")["reward"] == 1.0
    assert sdk.thumb(faq, call, up=False)["reward"] == -1.0
    assert sdk.rating(faq, call, 5)["reward"] == 1.0
    assert sdk.selection(faq, call, ["doc-2"], rejected=["doc-1"])["reward"] == 1.0
    assert sdk.correct(faq, call, {"items": [{"id": "doc-3"}]})["reward"] == -0.5
    ack = sdk.send_feedback(faq, {"kind": "label", "input": "refund", "items": ["doc-3"]})
    assert ack["created"] is True

    every = list(sdk.list_feedback(faq, page_size=2))
    assert [f["kind"] for f in every] == [
        "thumb", "thumb", "rating", "selection", "correction", "label",
    ]  # fmt: skip
    assert [f["id"] for f in sdk.list_feedback(faq, kind="thumb")] == [e["id"] for e in every[:2]]
    assert len(list(sdk.list_feedback(faq, min_reward=0.5, trainable=True))) == 4
    assert sdk.get_feedback(faq, ack["id"])["payload"] == {"items": ["doc-3"]}
    stats = sdk.stats(faq, bucket="hour")
    assert stats["total"] == 6
    assert stats["by_kind"]["thumb"] == 2


def test_resending_with_the_same_idempotency_key_returns_the_first_id(
    sdk: Client, faq: str
) -> None:
    event = {"kind": "thumb", "input": "q", "value": "up", "idempotency_key": "click-42"}
    first = sdk.send_feedback(faq, event)
    again = sdk.send_feedback(faq, event)
    assert (again["id"], again["created"]) == (first["id"], False)
    batch = sdk.send_feedback_batch(faq, [event, *thumbs(2)])
    assert batch["ids"][0] == first["id"]
    assert (batch["created"], batch["duplicates"]) == (2, 1)
    assert stored(sdk, faq) == 3


def test_a_batch_larger_than_the_server_limit_is_split_and_fully_stored(
    sdk: Client, faq: str
) -> None:
    ack = sdk.send_feedback_batch(faq, thumbs(10_500))
    assert len(ack["ids"]) == len(set(ack["ids"])) == 10_500
    assert ack["created"] == 10_500
    assert stored(sdk, faq) == 10_500


def test_a_refused_part_of_a_split_batch_names_rows_of_the_whole_batch(
    live_server: LiveServer, faq: str
) -> None:
    events = thumbs(7)
    events[5] = {"kind": "thumb", "interaction_id": "missing", "value": "up"}
    with Client(live_server.url, batch_size=3) as client:
        with pytest.raises(FineloopError) as refused:
            client.send_feedback_batch(faq, events)
        assert refused.value.status == 422
        assert [row["row"] for row in refused.value.invalid_rows] == [5]
        assert "the 3 events before were stored" in str(refused.value)
        assert stored(client, faq) == 3


def test_a_call_is_retried_until_the_server_is_back(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = LiveServer(settings)
    first.kill()
    monkeypatch.setattr(conftest, "free_port", lambda: first.port)
    restarted: list[LiveServer] = []
    starter = threading.Thread(target=lambda: restarted.append(LiveServer(settings)))
    starter.start()  # comes up while the client is backing off
    try:
        with Client(first.url, retries=10, backoff=0.1) as client:
            assert client.create_project("faq", "embedding")["name"] == "faq"
    finally:
        starter.join()
        for server in restarted:
            server.stop()


# Files


def test_files_are_imported_and_exported(sdk: Client, faq: str, tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"id": f"d{i}", "text": f"t{i}"}) + "\n" for i in range(4)))
    [report] = sdk.import_file(faq, "items", items)
    assert (report["rows"], report["created"]) == (4, 4)

    exported = sdk.export(faq, "items")
    assert [json.loads(line)["id"] for line in exported.splitlines()] == ["d0", "d1", "d2", "d3"]
    target = sdk.export(faq, "items", "csv", path=tmp_path / "out" / "items.csv")
    assert target.read_text().splitlines()[0].startswith("id,text")

    again = sdk.import_file(faq, "items", target)  # the exported CSV imports again
    assert again[0]["rows"] == 4

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "ok", "text": "fine"}\n{"id": "bad"}\n')
    with pytest.raises(FineloopError) as rejected:
        sdk.import_file(faq, "items", broken)
    assert rejected.value.status == 422
    assert rejected.value.invalid_rows[0]["line"] == 2

    with pytest.raises(ValueError, match="format"):
        sdk.import_file(faq, "items", tmp_path / "items.txt")


def test_open_assistant_trees_import_as_interactions_and_feedback(sdk: Client) -> None:
    sdk.create_project("assistant", "fake")
    trees = DATASETS / "oasst-en100" / "en_100_tree.jsonl"
    interactions, feedback = sdk.import_file("assistant", "feedback", trees, format="oasst")
    assert interactions["resource"] == "interactions" and interactions["rows"] > 100
    assert feedback["resource"] == "feedback" and feedback["created"] == feedback["rows"] > 0
    again = sdk.import_file("assistant", "feedback", trees, format="oasst")
    assert again[1]["duplicates"] == feedback["rows"]
    assert stored(sdk, "assistant") == feedback["rows"]


def test_export_of_an_unknown_project_is_a_404(sdk: Client, tmp_path: Path) -> None:
    with pytest.raises(FineloopError) as missing:
        sdk.export("nope", "feedback", path=tmp_path / "never.jsonl")
    assert missing.value.status == 404


# API keys


def test_the_first_key_turns_authentication_on(sdk: Client, live_server: LiveServer) -> None:
    admin_key = sdk.create_key("ops", "admin")["key"]
    with pytest.raises(FineloopError) as anonymous:
        sdk.list_projects()
    assert anonymous.value.status == 401

    with Client(live_server.url, api_key=admin_key) as admin:
        admin.create_project("faq", "embedding")
        ingest = admin.create_key("web", "ingest")
        assert {k["name"] for k in admin.list_keys()} == {"ops", "web"}
        call = admin.log_interaction("faq", "q", "a")
        with Client(live_server.url, api_key=ingest["key"]) as web:
            assert web.thumb("faq", call, up=True)["created"] is True
            assert admin.revoke_key(ingest["id"])["revoked"] is True
            with pytest.raises(FineloopError) as revoked:
                web.thumb("faq", call, up=True)
            assert revoked.value.status == 401


def test_configured_keys_separate_ingest_from_admin(settings: Settings) -> None:
    keys = f"{ADMIN_KEY}:admin,{INGEST_KEY}:ingest"
    server = LiveServer(settings, extra_env={"FINELOOP_API_KEYS": keys})
    try:
        with Client(server.url) as anonymous:
            assert anonymous.health()["status"] == "ok"
            with pytest.raises(FineloopError) as unauthorized:
                anonymous.list_projects()
            assert unauthorized.value.status == 401
            assert "Authorization: Bearer" in str(unauthorized.value)
        with Client(server.url, api_key=ADMIN_KEY) as admin:
            admin.create_project("faq", "embedding")
        with Client(server.url, api_key=INGEST_KEY) as ingest:
            assert ingest.send_feedback("faq", thumbs(1)[0])["created"] is True
            with pytest.raises(FineloopError) as forbidden:
                ingest.create_project("other", "embedding")
            assert forbidden.value.status == 403
            assert "scope 'ingest'" in str(forbidden.value)
    finally:
        server.stop()


# BufferedLogger


def test_a_full_batch_is_sent_without_waiting_for_the_interval(sdk: Client, faq: str) -> None:
    with BufferedLogger(sdk, faq, max_batch=50, flush_interval=3600) as logger:
        for event in thumbs(120):
            logger.feedback(event)
        wait_until(lambda: stored(sdk, faq) == 100 and logger.pending == 20, "two full batches")
        assert logger.flush() is True
        assert stored(sdk, faq) == 120


def test_queued_events_are_sent_after_the_flush_interval(sdk: Client, faq: str) -> None:
    with BufferedLogger(sdk, faq, max_batch=1000, flush_interval=0.2) as logger:
        call = sdk.log_interaction(faq, "q", {"items": [{"id": "a"}, {"id": "b"}]})
        logger.thumb(call, up=True)
        logger.rating(call, 4)
        logger.selection(call, ["b"])
        logger.correct(call, {"items": [{"id": "b"}]})
        wait_until(lambda: stored(sdk, faq) == 4, "the interval flush")
        assert logger.rejected == []


def test_flush_returns_once_every_event_is_stored_with_its_generated_key(
    sdk: Client, faq: str
) -> None:
    logger = BufferedLogger(sdk, faq, flush_interval=3600)
    keys = [logger.feedback(event) for event in thumbs(10)]
    keys.append(logger.feedback(thumbs(1, idempotency_key="mine")[0]))
    assert logger.flush() is True
    assert [f["idempotency_key"] for f in sdk.list_feedback(faq)] == keys
    assert keys[-1] == "mine" and len(set(keys)) == 11
    assert logger.close() is True
    with pytest.raises(RuntimeError, match="closed"):
        logger.thumb("x", up=True)


def test_events_still_queued_are_sent_when_the_interpreter_exits(
    live_server: LiveServer, sdk: Client, faq: str
) -> None:
    script = f"""
        from fineloop import BufferedLogger, Client
        logger = BufferedLogger(Client({live_server.url!r}), "faq", flush_interval=3600)
        for i in range(25):
            logger.feedback({{"kind": "thumb", "input": f"q{{i}}", "value": "up"}})
        # no flush, no close: the atexit hook must send them
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert stored(sdk, faq) == 25


def test_invalid_events_are_set_aside_and_the_rest_of_their_batch_is_stored(
    sdk: Client, faq: str
) -> None:
    reported: list[tuple[int, int]] = []
    logger = BufferedLogger(
        sdk,
        faq,
        flush_interval=3600,
        on_error=lambda e, rows: reported.append((e.status, len(rows))),
    )
    good = thumbs(4)
    malformed = {"kind": "thumb", "input": "q", "value": "sideways"}
    dangling = {"kind": "thumb", "interaction_id": "never-logged", "value": "up"}
    for event in [good[0], malformed, good[1], good[2], dangling, good[3]]:
        logger.feedback(event)
    assert logger.flush() is True
    assert stored(sdk, faq) == 4
    assert [r.event["value"] for r in logger.rejected] == ["sideways", "up"]
    assert logger.rejected[0].reason.startswith("value:")
    assert "never-logged" in logger.rejected[1].reason
    assert reported == [(422, 1), (422, 1)]
    logger.close()


def test_a_full_queue_drops_new_events_and_reports_them(sdk: Client, faq: str) -> None:
    reported: list[str] = []
    with BufferedLogger(
        sdk, faq, flush_interval=3600, max_queue=3, on_error=lambda e, _: reported.append(e.code)
    ) as logger:
        for event in thumbs(5):
            logger.feedback(event)
        assert (logger.dropped, reported) == (2, ["queue_full", "queue_full"])
    assert stored(sdk, faq) == 3


def test_events_logged_while_the_server_is_down_arrive_once_it_is_back(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = LiveServer(settings)
    with Client(first.url, retries=0) as client:
        client.create_project("faq", "embedding")
        logger = BufferedLogger(client, "faq", flush_interval=0.05)
        first.kill()
        for event in thumbs(5):
            logger.feedback(event)
        assert logger.flush(timeout=1.0) is False  # nobody is listening
        monkeypatch.setattr(conftest, "free_port", lambda: first.port)
        second = LiveServer(settings)
        try:
            assert logger.flush() is True
            assert stored(client, "faq") == 5
            assert logger.rejected == []
        finally:
            logger.close()
            second.stop()


def test_a_batch_too_large_for_the_server_is_halved_until_it_fits(settings: Settings) -> None:
    server = LiveServer(settings, extra_env={"FINELOOP_MAX_REQUEST_BYTES": "20000"})
    try:
        with Client(server.url) as client:
            client.create_project("faq", "embedding")
            with BufferedLogger(client, "faq", flush_interval=3600) as logger:
                for event in thumbs(100, metadata={"note": "x" * 400}):
                    logger.feedback(event)
                assert logger.flush() is True
                assert logger.rejected == []
            assert stored(client, "faq") == 100
    finally:
        server.stop()
