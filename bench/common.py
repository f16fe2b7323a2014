"""Helpers shared by the benchmarks: statistics, a result table, the JSON file, a live server.

Every benchmark runs fineloop and the bare library it wraps side by side in one process run,
prints one rich table and writes `bench/results/<script>.json`:

    {"benchmark": ..., "machine": {...}, "config": {...},
     "cases": [{"case": ..., "fineloop": {metric: number}, "base": {...}, "plain": {...}, ...}]}

`base` is the untrained model where there is one, `{}` otherwise; `plain` is the bare library.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"
console = Console(width=None if sys.stdout.isatty() else 120)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolated between closest ranks like numpy's default."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def machine_facts() -> dict[str, Any]:
    """What a reader needs to compare two result files: cores, versions, the disk mode."""
    import fineloop
    from fineloop.config import Settings

    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "fineloop": fineloop.__version__,
        "sqlite_synchronous": Settings().sqlite_synchronous,
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }


def write_results(script: str, payload: dict[str, Any]) -> Path:
    """Write `bench/results/<script>.json` (script is the module name, e.g. `ingest`)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{script}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*(cell if isinstance(cell, str) else fmt(cell) for cell in row))
    console.print(table)


COMPARISON_COLUMNS = ("metric", "fineloop", "plain", "fineloop/plain", "goal", "met")


def comparison_row(
    metric: str, fineloop: float, plain: float, goal: str = "", met: bool | None = None
) -> list[Any]:
    """One row of the usual side-by-side table, the ratio computed here."""
    verdict = "" if met is None else ("[green]yes[/green]" if met else "[red]no[/red]")
    return [metric, fineloop, plain, ratio(fineloop, plain), goal, verdict]


def fmt(value: float | int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    """A `fineloop serve` child process on loopback with its own data dir."""

    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def database(self) -> Path:
        return self.data_dir / "fineloop.db"


@contextmanager
def running_server(
    env: dict[str, str] | None = None,
    startup_s: float = 60.0,
    command: Sequence[str] = (sys.executable, "-m", "fineloop", "serve"),
) -> Iterator[Server]:
    """Start `python -m fineloop serve --no-demo` in a fresh temp dir; stop and clean up after.

    The child sees no FINELOOP_* variable of ours except those in `env`, so the results do
    not depend on the shell the benchmark was started from. `command` lets a profiler (or a
    patched entry point being evaluated) wrap the server."""
    data_dir = Path(tempfile.mkdtemp(prefix="fineloop-bench-"))
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("FINELOOP_")}
    child_env["FINELOOP_DATA_DIR"] = str(data_dir)
    child_env.update(env or {})
    log = (data_dir / "server.log").open("wb")
    process = subprocess.Popen(
        [*command, "--no-demo", "--port", str(port)],
        env=child_env,
        cwd=data_dir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = Server(f"http://127.0.0.1:{port}", data_dir, process)
    try:
        _wait_healthy(server, startup_s)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_healthy(server: Server, startup_s: float) -> None:
    deadline = time.monotonic() + startup_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited: {(server.data_dir / 'server.log').read_text()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not healthy after {startup_s:.0f}s")
