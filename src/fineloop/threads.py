"""OpenMP's wait policy: passive while serving, the library's default while training.

Spinning OpenMP threads turn a busy CPU into 100-500 ms stalls per query (MiniLM, 2 cores,
load 4: p50 109-475 ms spinning, 10.3 ms passive), so the server makes them sleep. The
policy is read once, when torch loads, so it must be set before that. Training wants the
opposite: passive threads made MiniLM training 16% slower here, so the processes a job
runs in get the default back, unless the user chose a policy.
"""

from __future__ import annotations

import os

VARIABLE = "OMP_WAIT_POLICY"
_set_here = False


def passive_for_serving() -> None:
    """Make OpenMP threads sleep while waiting (an explicit setting wins)."""
    global _set_here
    if VARIABLE not in os.environ:
        os.environ[VARIABLE] = "PASSIVE"
        _set_here = True


def for_training(env: dict[str, str]) -> dict[str, str]:
    """`env` for a training process: without the policy this process set for serving."""
    if _set_here:
        env.pop(VARIABLE, None)
    return env
