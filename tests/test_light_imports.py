"""The CLI, the API and the store start without the ML stack.

`fineloop --help`, `fineloop serve` and the REST API must not pay for torch and friends.
A fresh interpreter records every attempt to import them, so even an import inside
`try: ... except ImportError` (or one that fails because the package is absent) counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import LiveServer

HEAVY = ("torch", "transformers", "sentence_transformers")

PROBE = """
import json, sys

HEAVY = {heavy!r}
attempts = []

class Recorder:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            attempts.append(name)
        return None  # let the normal finders decide

sys.meta_path.insert(0, Recorder())

import fineloop.cli, fineloop.api, fineloop.store
from fineloop.api import create_app
from fineloop.cli import app as cli
from fineloop.config import get_settings

create_app(get_settings(data_dir=sys.argv[1]))
print(json.dumps({{
    "attempts": sorted(set(attempts)),
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY),
    "cli": cli.info.name,
}}))
"""


def test_cli_api_and_store_import_no_ml_stack(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["cli"] == "fineloop"  # the probe did load the CLI
    assert report["attempts"] == []
    assert report["loaded"] == []
    assert (tmp_path / "data" / "fineloop.db").exists()  # and did build the app on a store


# A light install: `pip install fineloop` without extras. The probe makes every module an
# extra provides unimportable, as if absent, then runs the SDK or the CLI as a user would.
LIGHT_ABSENT = (
    "torch transformers sentence_transformers datasets accelerate faiss onnxruntime onnx "
    "optuna sklearn scipy numpy pyarrow fsspec fastapi starlette uvicorn jinja2"
).split()

LIGHT_PROBE = """
import sys

ABSENT = {absent!r}

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Absent())
"""

SDK_SCRIPT = """
import json
from fineloop import Client

with Client(sys.argv[1]) as client:
    client.create_project("light", "embedding")
    client.upsert_items("light", [{{"id": "a", "text": "hello"}}])
    client.send_feedback("light", {{"kind": "thumb", "input": "hi", "value": "up"}})
    print(json.dumps({{
        "projects": [p["name"] for p in client.list_projects()],
        "feedback": client.stats("light")["total"],
    }}))
"""

CLI_SCRIPT = """
from fineloop.cli import main

sys.argv = ["fineloop", *sys.argv[1:]]
main()
"""


def light_run(script: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run `script` in a fresh interpreter where the extras' modules are absent."""
    return subprocess.run(
        [sys.executable, "-c", LIGHT_PROBE.format(absent=LIGHT_ABSENT) + script, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def light_cli(data_dir: Path, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINELOOP_")}
    env["FINELOOP_DATA_DIR"] = str(data_dir)
    env["COLUMNS"] = "200"  # one line per message, whatever the terminal
    return light_run(CLI_SCRIPT, *args, env=env)


def test_the_sdk_works_without_any_extra(live_server: LiveServer) -> None:
    result = light_run(SDK_SCRIPT.format(), live_server.url)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert "light" in report["projects"]
    assert report["feedback"] == 1


def test_the_cli_runs_store_commands_without_any_extra(tmp_path: Path) -> None:
    data = tmp_path / "data"
    helped = light_cli(data, "--help")
    assert helped.returncode == 0, helped.stderr
    assert "serve" in helped.stdout
    assert "project" in helped.stdout

    created = light_cli(data, "project", "create", "shop")
    assert created.returncode == 0, created.stderr
    items = tmp_path / "items.jsonl"
    items.write_text('{"id": "a", "text": "red shoes"}\n{"id": "b", "text": "a blue hat"}\n')
    imported = light_cli(data, "items", "import", str(items), "--project", "shop")
    assert imported.returncode == 0, imported.stderr
    assert "2 new" in imported.stdout
    listed = light_cli(data, "project", "list")
    assert listed.returncode == 0, listed.stderr
    assert "shop" in listed.stdout


def test_server_and_training_commands_name_the_extra_to_install(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert light_cli(data, "project", "create", "shop").returncode == 0
    for command, extra in (
        (["serve"], "server"),
        (["worker"], "server"),
        (["tune", "shop"], "server"),
        (["train", "shop"], "embedding"),
    ):
        result = light_cli(data, *command)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert f"pip install 'fineloop[{extra}]'" in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr, (command, result.stderr)
