"""What a benchmark shares with the child processes it measures in: threads set before torch
loads, peak memory, and one JSON result line on stdout (`RESULT_MARK`). Standard library
only, so importing it adds nothing to the memory a child reports."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULT_MARK = "RESULT "


def set_threads(threads: int) -> None:
    """torch/OpenMP threads for this process and its children, set before torch loads.
    The 2 cores here are shared with other processes: with 2 threads each, OpenMP's
    barriers made a SmolLM2 training step ~8x slower than with 1 (measured 24 s vs 3 s)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_child(script: str, args: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run `python bench/<script> <args>` and return the JSON it prints after RESULT_MARK."""
    path = Path(__file__).resolve().parent / script
    done = subprocess.run(
        [sys.executable, str(path), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
            return result
    raise RuntimeError(
        f"{script} {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    )


def print_result(result: dict[str, Any]) -> None:
    print(RESULT_MARK + json.dumps(result), flush=True)
