"""The `fineloop` command line, run as a user runs it, on the test's store.

Commands find the store through FINELOOP_DATA_DIR (and FINELOOP_DATABASE_URL on PostgreSQL).
Rich wraps long lines, so messages are compared with whitespace collapsed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from conftest import free_port
from fineloop.cli import app
from fineloop.config import Settings


@pytest.fixture
def cli_env(settings: Settings) -> dict[str, str]:
    env = {"FINELOOP_DATA_DIR": str(settings.data_dir)}
    if settings.database_url:
        env["FINELOOP_DATABASE_URL"] = settings.database_url
    return env


Run = Callable[..., Result]


@pytest.fixture
def run(cli_env: dict[str, str]) -> Run:
    """Invoke `fineloop ARGS...` in-process on the test's store."""
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), env=cli_env)

    return invoke


def said(result: Result) -> str:
    """Everything the command printed (stdout and stderr), whitespace collapsed."""
    return " ".join(result.output.split())


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return said(result)


def test_project_create_list_show(run: Run) -> None:
    assert "created project faq (embedding)" in ok(
        run("project", "create", "faq", "--rating-min", "0", "--rating-max", "10")
    )
    ok(run("project", "create", "chat", "--task", "fake", "--base-model", "gpt2"))
    listed = ok(run("project", "list"))
    assert "faq" in listed and "chat" in listed and "gpt2" in listed
    shown = json.loads(run("project", "show", "faq").stdout)
    assert shown["name"] == "faq"
    assert shown["reward_policy"]["rating_scale"] == {"min": 0.0, "max": 10.0}


def test_a_ner_project_takes_its_entity_types(run: Run) -> None:
    made = ok(
        run(
            "project",
            "create",
            "docs",
            "--task",
            "ner",
            "--entity-type",
            "EQUIPMENT",
            "--entity-type",
            "MEASURE",
        )
    )
    assert "created project docs (ner)" in made
    shown = json.loads(run("project", "show", "docs").stdout)
    assert shown["task_options"]["entity_types"] == ["EQUIPMENT", "MEASURE"]
    missing = run("project", "create", "docs2", "--task", "ner")
    assert missing.exit_code == 1 and "entity_types" in said(missing)
    as_json = run("project", "create", "docs3", "--task", "ner", "--options", '{"entity_types": 3}')
    assert as_json.exit_code == 1 and "list" in said(as_json), as_json.output


def test_project_errors_are_one_clear_line(run: Run) -> None:
    ok(run("project", "create", "faq"))
    again = run("project", "create", "faq")
    assert again.exit_code == 1
    assert said(again) == "error: project 'faq' already exists"
    missing = run("project", "show", "nope")
    assert missing.exit_code == 1
    assert "unknown project 'nope'" in said(missing)
    bad_name = run("project", "create", "Not Valid")
    assert bad_name.exit_code == 2
    assert "Traceback" not in bad_name.output


def test_project_update_merges_policies_and_refuses_a_typo(run: Run) -> None:
    ok(run("project", "create", "faq"))
    ok(run("project", "update", "faq", "--training-policy", '{"train": {"epochs": 2}}'))
    ok(run("project", "update", "faq", "--training-policy", '{"refit": true, "seed": 7}'))
    shown = json.loads(run("project", "show", "faq").stdout)["training_policy"]
    assert (shown["refit"], shown["seed"], shown["train"]) == (True, 7, {"epochs": 2})
    typo = run("project", "update", "faq", "--training-policy", '{"train": {"epoch": 2}}')
    assert typo.exit_code == 1 and "epoch" in said(typo), typo.output
    bad = run("project", "update", "faq", "--serving-policy", "[1]")
    assert bad.exit_code == 2 and "JSON object" in bad.output
    assert "Traceback" not in typo.output + bad.output
    again = json.loads(run("project", "show", "faq").stdout)["training_policy"]
    assert again["train"] == {"epochs": 2}  # nothing stored by the refused changes


def test_items_import_from_csv(run: Run, tmp_path: Path) -> None:
    ok(run("project", "create", "faq"))
    catalog = tmp_path / "catalog.csv"
    catalog.write_text(
        "id,text,metadata\n"
        'reset,How do I reset my password?,"{""tags"": [""account""]}"\n'
        '"refund","Refunds, and how to ask",{}\n'
    )
    assert "items: 2 rows, 2 new" in ok(run("items", "import", str(catalog), "-p", "faq"))
    exported = run("feedback", "export", "-p", "faq", "--resource", "items")
    assert exported.exit_code == 0, exported.output
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert rows == [
        {"id": "reset", "text": "How do I reset my password?", "metadata": {"tags": ["account"]}},
        {"id": "refund", "text": "Refunds, and how to ask", "metadata": {}},
    ]


EVENTS: list[dict[str, Any]] = [
    {"kind": "thumb", "value": "up", "input": "q1", "idempotency_key": "e1"},
    {"kind": "thumb", "value": "down", "input": "q2", "idempotency_key": "e2"},
    {"kind": "rating", "value": 5, "input": "q3", "idempotency_key": "e3"},
    {"kind": "label", "input": "Alice in Paris", "label": "travel", "idempotency_key": "e4"},
]


def test_feedback_import_export_stats(run: Run, tmp_path: Path) -> None:
    ok(run("project", "create", "faq"))
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps(event) + "\n" for event in EVENTS))
    assert "feedback: 4 rows, 4 new, 0 already present" in ok(
        run("feedback", "import", str(source), "-p", "faq")
    )
    assert "feedback: 4 rows, 0 new, 4 already present" in ok(
        run("feedback", "import", str(source), "-p", "faq")
    )
    target = tmp_path / "out" / "feedback.csv"
    target.parent.mkdir()
    assert f"wrote {target}" in ok(run("feedback", "export", "-p", "faq", "-o", str(target)))
    lines = target.read_text().splitlines()
    assert lines[0].startswith("kind,interaction_id,input")
    assert len(lines) == 1 + len(EVENTS)
    stats = ok(run("feedback", "stats", "-p", "faq"))
    assert "faq: 4 events" in stats
    assert re.search(r"thumb\W+2\b", stats)
    assert re.search(r"rating\W+1\b", stats)
    assert re.search(r"label\W+1\b", stats)


def test_bad_file_exits_1_naming_the_line(run: Run, tmp_path: Path) -> None:
    ok(run("project", "create", "faq"))
    source = tmp_path / "events.jsonl"
    rows = [json.dumps(event) for event in EVENTS[:2]]
    rows.append(json.dumps({"kind": "rating", "value": 99, "input": "q"}))
    source.write_text("\n".join(rows) + "\n")
    result = run("feedback", "import", str(source), "-p", "faq")
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert "line 3: value: rating 99 is off the scale 1..5" in said(result)
    assert "nothing was stored" in said(result)
    assert "0 events" in ok(run("feedback", "stats", "-p", "faq"))


def test_malformed_file_and_unknown_suffix(run: Run, tmp_path: Path) -> None:
    ok(run("project", "create", "faq"))
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(EVENTS[0]) + "\n{not json\n")
    result = run("feedback", "import", str(broken), "-p", "faq")
    assert result.exit_code == 1
    assert said(result).startswith("error: line 2: not valid JSON")
    odd = tmp_path / "events.txt"
    odd.write_text("whatever")
    result = run("feedback", "import", str(odd), "-p", "faq")
    assert result.exit_code == 1
    assert "cannot tell the format of 'events.txt'" in said(result)
    assert "Traceback" not in result.output


def test_keys_create_list_revoke(run: Run) -> None:
    created = ok(run("keys", "create", "webapp", "--scope", "admin"))
    match = re.search(r"key (\d+) \(admin\): (fl_\S+)", created)
    assert match, created
    key_id, secret = match.groups()
    assert "cannot be shown again" in created
    listed = ok(run("keys", "list"))
    assert "webapp" in listed and secret[:8] in listed and secret not in listed
    assert re.search(rf"{key_id}\W+webapp\W+{re.escape(secret[:8])}\W+admin\W+False", listed)
    assert f"revoked key {key_id}" in ok(run("keys", "revoke", key_id))
    assert re.search(r"webapp\W+\S+\W+admin\W+True", ok(run("keys", "list")))
    missing = run("keys", "revoke", "999")
    assert missing.exit_code == 1
    assert "no API key with id 999" in said(missing)
    bad_scope = run("keys", "create", "x", "--scope", "root")
    assert bad_scope.exit_code == 2


def _outside_address() -> str | None:
    """This machine's address on its main interface, if it has one besides loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.255", 9))  # no packet is sent for UDP connect
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_serve_without_keys_binds_loopback_only(cli_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINELOOP_")}
    env.update(cli_env, PYTHONUNBUFFERED="1")
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "fineloop", "serve", "--host", "0.0.0.0", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/healthz", server, log)
        outside = _outside_address()
        if outside is not None:
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://{outside}:{port}/healthz", timeout=2)
    finally:
        server.terminate()
        server.wait(timeout=30)
    printed = " ".join(log.read_text().split())
    assert "binds to 127.0.0.1 only (not 0.0.0.0)" in printed
    assert f"API docs: http://127.0.0.1:{port}/docs" in printed


def _wait_healthy(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"server did not start: {log.read_text()}")


def test_tasks_lists_every_installed_family_with_its_direction(run: Run) -> None:
    out = ok(run("tasks"))

    assert "embedding" in out and "ndcg@10" in out
    assert "fake-loss" in out and "error" in out and "lower" in out
