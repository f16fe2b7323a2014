"""`serving_threads` caps torch's threads in the serving process's encoding threads.

It runs in a fresh interpreter: the cap is process-wide and must not slow the suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from fineloop.config import Settings, get_settings

SCRIPT = """
import json, sys, threading
from fastapi.testclient import TestClient
from fineloop.api import create_app
from fineloop.config import get_settings
from fineloop.store import Store

settings = get_settings(data_dir=sys.argv[1], serving_threads=json.loads(sys.argv[3]))
import torch
before = torch.get_num_threads()
seen, handed = [], []
model_ready = threading.Event()

def request_thread():  # ran torch at the default before any model loaded, like a pool thread
    torch.ones(4).sum()
    seen.append(torch.get_num_threads())
    model_ready.wait()
    handed[0].encode(["a query"])
    seen.append(torch.get_num_threads())

worker = threading.Thread(target=request_thread)
worker.start()
store = Store.open(settings)
with TestClient(create_app(settings, store)) as client:
    client.post("/v1/projects", json={"name": "p", "task": "embedding", "base_model": sys.argv[2]})
    client.put("/v1/projects/p/items", json={"items": [
        {"id": "a", "text": "red wall"}, {"id": "b", "text": "blue door"}]})
    found = client.post("/v1/projects/p/search", json={"query": "wall", "k": 2})
    state = client.app.state.serving
    handed.append(state.models.get(state.serve("p").version, "embedding"))
    model_ready.set()
    worker.join()
print(json.dumps({"status": found.status_code, "before": before,
                  "ready": seen[0], "encoding": seen[1]}))
"""


def run_server_process(tmp_path: Path, tiny_model: Path, threads: int | None) -> dict[str, int]:
    data_dir = tmp_path / f"data-{threads}"
    data_dir.mkdir()
    args = [str(data_dir), str(tiny_model), json.dumps(threads)]
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    shown: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return shown


def test_serving_threads_caps_every_thread_that_encodes(tmp_path: Path, tiny_model: Path) -> None:
    capped = run_server_process(tmp_path, tiny_model, 1)
    assert capped["status"] == 200, capped
    assert capped["ready"] == capped["before"] > 1, capped  # so the cap is seen to act
    assert capped["encoding"] == 1, capped


def test_without_serving_threads_torch_keeps_its_default(tmp_path: Path, tiny_model: Path) -> None:
    default = run_server_process(tmp_path, tiny_model, None)
    assert default["status"] == 200
    assert default["encoding"] == default["before"] == default["ready"], default


def test_serving_threads_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="serving_threads"):
        get_settings(data_dir=tmp_path, serving_threads=0)
    assert Settings(data_dir=tmp_path).serving_threads is None
