"""The review queue from the SDK (against a real `fineloop serve`) and from the CLI
(`fineloop review list`, in-process on the test's store): the same order as the API's,
pages, overrides, and errors as one clear message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import LiveServer
from fineloop import Client, FineloopError
from fineloop.cli import app
from fineloop.config import Settings
from fineloop.operations import store_interactions, store_items
from fineloop.schemas import InteractionCreate, ItemIn, ProjectCreate
from fineloop.store import Store
from fineloop.store.projects import create_project

# input, probability of the top item (threshold 0.5): uncertainty 1 - |p - 0.5|
SHOWN = [("sure", 0.95), ("unsure", 0.55), ("middling", 0.8)]
BY_UNCERTAINTY = ["unsure", "middling", "sure"]


def rows() -> list[dict[str, Any]]:
    return [
        {
            "id": name,
            "input": f"query {name}",
            "output": {"items": [{"id": "doc", "score": 0.5, "probability": p}]},
            "model_version": "v1",
            "created_at": f"2026-01-01T00:0{i}:00+00:00",
        }
        for i, (name, p) in enumerate(SHOWN)
    ]


@pytest.fixture
def sdk(live_server: LiveServer) -> Iterator[Client]:
    with Client(live_server.url) as client:
        client.create_project("faq", "embedding")
        client.log_interactions("faq", rows())
        yield client


def ids(page: dict[str, Any]) -> list[str]:
    return [item["interaction"]["id"] for item in page["items"]]


def test_the_sdk_rewrites_an_interaction_and_finds_items_by_a_few_words(sdk: Client) -> None:
    sdk.upsert_items("faq", [{"id": "doc", "text": "Reset"}, {"id": "faq-2", "text": "Refunds"}])
    assert [i["id"] for i in sdk.list_items("faq", contains="refund")] == ["faq-2"]
    edit = sdk.review_queue("faq")["items"][0]["edit"]
    assert edit["action"] == "label" and edit["text"] == "doc"
    ack = sdk.review_rewrite("faq", "unsure", "faq-2", idempotency_key="k", user_id="ana")
    assert (
        ack["created"]
        and sdk.review_rewrite("faq", "unsure", "faq-2", idempotency_key="k")["id"] == ack["id"]
    )
    [event] = sdk.list_feedback("faq", interaction_id="unsure")
    assert event["payload"]["items"] == ["faq-2"] and event["user_id"] == "ana"
    with pytest.raises(FineloopError) as unknown:
        sdk.review_rewrite("faq", "sure", "missing-doc")
    assert unknown.value.status == 422 and "'missing-doc'" in unknown.value.message


def test_the_sdk_fetches_the_queue_page_by_page(sdk: Client) -> None:
    first = sdk.review_queue("faq", limit=2)
    assert ids(first) == BY_UNCERTAINTY[:2] and first["next_offset"] == 2
    rest = sdk.review_queue("faq", limit=2, offset=first["next_offset"])
    assert ids(rest) == BY_UNCERTAINTY[2:] and rest["next_offset"] is None
    assert ids(sdk.review_queue("faq", ranking="recent")) == ["middling", "unsure", "sure"]
    sdk.update_project("faq", review_policy={"ranking": "recent", "limit": 1})
    assert ids(sdk.review_queue("faq")) == ["middling"]
    sdk.thumb("faq", "middling", up=True)
    assert ids(sdk.review_queue("faq", ranking="uncertainty", limit=9)) == ["unsure", "sure"]


def test_sdk_errors_carry_the_status(sdk: Client) -> None:
    with pytest.raises(FineloopError) as missing:
        sdk.review_queue("nope")
    assert missing.value.status == 404
    with pytest.raises(FineloopError) as bad:
        sdk.review_queue("faq", limit=501)
    assert bad.value.status == 422 and "limit" in bad.value.message


@pytest.fixture
def cli(settings: Settings, store: Store) -> Any:
    with store.write() as session:
        create_project(session, ProjectCreate(name="faq", task="embedding"))
    store_interactions(store, "faq", [InteractionCreate.model_validate(r) for r in rows()])
    env = {"FINELOOP_DATA_DIR": str(settings.data_dir)}
    if settings.database_url:
        env["FINELOOP_DATABASE_URL"] = settings.database_url
    runner = CliRunner()
    return lambda *args, command="list", input=None: runner.invoke(
        app, ["review", command, *args], env=env, input=input
    )


def test_the_cli_lists_the_queue_as_a_table_and_as_json(cli: Any) -> None:
    table = cli("faq")
    assert table.exit_code == 0, table.output
    lines = [line for line in table.output.splitlines() if "query " in line]
    assert [line.split()[3] for line in lines] == BY_UNCERTAINTY  # "│ 1 │ unsure │ query unsure"
    assert "0.950" in table.output and "3 of 3 ranked by uncertainty" in table.output
    page = json.loads(cli("faq", "--json", "--ranking", "recent", "--limit", "2").stdout)
    assert ids(page) == ["middling", "unsure"] and page["next_offset"] == 2
    assert "next: --offset 1" in cli("faq", "--limit", "1").output


def test_cli_errors_are_one_clear_line(cli: Any) -> None:
    missing = cli("nope")
    assert missing.exit_code == 1 and "unknown project 'nope'" in missing.output
    bad = cli("faq", "--ranking", "loudest")
    assert bad.exit_code == 2 and "--ranking" in bad.output
    too_many = cli("faq", "--limit", "501")
    assert too_many.exit_code == 2
    assert "Traceback" not in missing.output + bad.output + too_many.output


def test_the_cli_shows_what_to_rewrite_then_stores_the_rewrite(
    cli: Any, store: Store, tmp_path: Any
) -> None:
    shown = cli("faq", "unsure", command="edit")
    assert shown.exit_code == 0, shown.output
    assert "label" in shown.output and "one per line" in shown.output and "doc" in shown.output
    # the catalog a label must name
    store_items(store, "faq", [ItemIn(id="doc", text="a"), ItemIn(id="doc-9", text="b")])
    done = cli("faq", "unsure", "--text", "doc-9", "--key", "k1", command="edit")
    assert done.exit_code == 0, done.output
    assert "label" in done.output and "stored" in done.output
    again = cli("faq", "unsure", "--file", "-", "--key", "k1", command="edit", input="doc-9\n")
    assert again.exit_code == 0 and "already stored" in again.output
    page = json.loads(cli("faq", "--json").stdout)
    assert "unsure" not in ids(page)  # answered: it left the queue
    wrong = cli("faq", "sure", "--text", "nope", command="edit")
    assert wrong.exit_code == 1 and "not in the catalog: 'nope'" in wrong.output
    both = cli("faq", "sure", "--text", "doc", "--file", str(tmp_path / "x"), command="edit")
    assert both.exit_code == 2
    missing = cli("faq", "ghost", command="edit")
    assert missing.exit_code == 1 and "no interaction 'ghost'" in missing.output
    assert "Traceback" not in wrong.output + missing.output + both.output
