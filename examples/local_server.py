"""What the examples share: `fineloop serve` on a free port with a fresh store in a
temporary folder (gone when the example ends), and a project name not taken yet."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx


@contextlib.contextmanager
def local_server() -> Iterator[str]:
    """`fineloop serve` on a free port with a fresh store in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="fineloop-example-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINELOOP_")}
    env["FINELOOP_DATA_DIR"] = str(folder)
    command = [sys.executable, "-m", "fineloop", "serve", "--no-demo", "--port", str(port)]
    with (folder / "server.log").open("wb") as log:
        server = subprocess.Popen(command, env=env, cwd=folder, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit((folder / "server.log").read_text())
            time.sleep(0.2)
        print(f"fineloop serve on {url} (data in {folder})")
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(folder, ignore_errors=True)


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_name(client: Any, wanted: str) -> str:
    """`wanted`, or `wanted-2`, `wanted-3`, ... whichever no project has yet."""
    taken = {project["name"] for project in client.list_projects()}
    name, n = wanted, 1
    while name in taken:
        n += 1
        name = f"{wanted}-{n}"
    return name
