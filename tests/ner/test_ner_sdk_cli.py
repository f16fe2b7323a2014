"""`Client.extract` and `fineloop extract`, against a real `fineloop serve` with a NER
project on the tiny BERT: one text and a batch, the interactions they log, a correction
taught back through the SDK, errors, and the wait through a 503 while the model loads."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from fineloop import Client, FineloopError
from fineloop.config import get_settings
from fineloop.tasks.ner.cli import extract
from ner.serving_helpers import TYPES, build_ner_model

PROJECT = "maintenance"
TEXT = "Replaced the seal on the Flowserve pump."


def _live_server_class(config: pytest.Config) -> Any:
    """`LiveServer` of the root conftest (this folder's conftest shadows the name)."""
    root = Path(__file__).resolve().parents[1] / "conftest.py"
    for plugin in config.pluginmanager.get_plugins():
        if Path(getattr(plugin, "__file__", None) or "/").resolve() == root:
            return plugin.LiveServer
    raise LookupError(root)


@pytest.fixture(scope="module")
def server(
    pytestconfig: pytest.Config,
    tmp_path_factory: pytest.TempPathFactory,
    _tiny_model_master: Path,
) -> Iterator[Any]:
    """One `fineloop serve` for the module, answering 503 at once while a model loads
    (the SDK waits through it); its own SQLite store."""
    model = build_ner_model(_tiny_model_master, tmp_path_factory.mktemp("ner-model"))
    settings = get_settings(
        data_dir=tmp_path_factory.mktemp("ner-server"),
        models_root=tmp_path_factory.getbasetemp(),
        serving_wait_seconds=0.0,
    )
    live = _live_server_class(pytestconfig)(settings)
    spec = {
        "name": PROJECT,
        "task": "ner",
        "base_model": str(model),
        "task_options": {"entity_types": TYPES},
    }
    created = httpx.post(f"{live.url}/v1/projects", json=spec, timeout=30)
    assert created.status_code == 201, created.text
    yield live
    live.stop()


@pytest.fixture
def sdk(server: Any) -> Iterator[Client]:
    with Client(server.url, timeout=60) as client:
        yield client


def test_extract_one_text_and_a_batch_and_log_them(sdk: Client) -> None:
    one = sdk.extract(PROJECT, TEXT, documents="log-7", user_id="u1", metadata={"site": "n"})
    assert one["model_version"] == "v0"  # waited through the 503 of the first load
    [result] = one["results"]
    assert {"seal", "Flowserve", "pump"} <= {s["text"] for s in result["spans"]}
    logged = sdk.get_interaction(PROJECT, result["interaction_id"])
    assert logged["input"] == {"text": TEXT, "document": "log-7"}
    assert logged["output"] == {"spans": result["spans"]} and logged["user_id"] == "u1"

    texts = ["Pump 3 leaks.", "Valve at 40 psi."]
    batch = sdk.extract(PROJECT, texts, version="v0")
    assert [r["spans"][0]["text"] for r in batch["results"]] == ["Pump", "Valve"]
    for text, found in zip(texts, batch["results"], strict=True):
        assert sdk.get_interaction(PROJECT, found["interaction_id"])["input"] == {"text": text}


def test_a_correction_through_the_sdk_is_found_in_the_next_text(sdk: Client) -> None:
    shown = sdk.extract(PROJECT, TEXT)["results"][0]
    spans = {s["text"]: s for s in shown["spans"]}
    edits = [
        {"op": "delete", "start": spans["Flowserve"]["start"], "end": spans["Flowserve"]["end"]},
        {"op": "delete", "start": spans["pump"]["start"], "end": spans["pump"]["end"]},
        {"op": "add", "start": 25, "end": 39, "label": "EQUIPMENT"},
    ]
    sdk.correct(PROJECT, shown["interaction_id"], {"edits": edits})

    later = sdk.extract(PROJECT, "Flowserve pump tripped.")["results"][0]
    first = later["spans"][0]
    assert (first["text"], first["source"], first["label"]) == (
        "Flowserve pump",
        "memory",
        "EQUIPMENT",
    )


def test_errors_are_raised_with_the_servers_message(sdk: Client) -> None:
    with pytest.raises(FineloopError) as unknown:
        sdk.extract(PROJECT, TEXT, version="v9")
    assert unknown.value.status == 404
    with pytest.raises(FineloopError) as too_many:
        sdk.extract(PROJECT, ["a"] * 257)
    assert too_many.value.status == 422 and "256" in too_many.value.message


def _cli() -> typer.Typer:
    """The command on an app of its own (the lead wires it into `fineloop`)."""
    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("extract")(extract)
    return app


def test_the_command_prints_spans_as_a_table_or_json(server: Any, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"FINELOOP_URL": server.url}
    shown = runner.invoke(_cli(), ["extract", PROJECT, "Check the seal."], env=env)
    assert shown.exit_code == 0, shown.output
    assert "seal" in shown.stdout and "EQUIPMENT" in shown.stdout
    assert "interactions " in shown.stderr and "(v0)" in shown.stderr

    texts = tmp_path / "texts.txt"
    texts.write_text("Pump 3 leaks.\n\nValve stuck.\n", encoding="utf-8")
    as_json = runner.invoke(
        _cli(), ["extract", PROJECT, "--file", str(texts), "--json", "--version", "v0"], env=env
    )
    assert as_json.exit_code == 0, as_json.output
    answer = json.loads(as_json.stdout)
    assert len(answer["results"]) == 2 and answer["model_version"] == "v0"

    missing = runner.invoke(_cli(), ["extract", "nope", "text"], env=env)
    assert missing.exit_code == 1 and "nope" in missing.stderr
    neither = runner.invoke(_cli(), ["extract", PROJECT], env=env)
    assert neither.exit_code == 2 and "give a text or --file" in neither.stderr
