"""OpenMP's wait policy: passive while serving, the library's default while training.

Spinning OpenMP threads turn a busy CPU into 100-500 ms stalls per query (MiniLM, 2 cores,
load 4: p50 109-475 ms spinning, 10.3 ms passive), so the server makes them sleep. The
policy is read once, when torch loads, so it must be set before that. Training wants the
opposite: passive threads made MiniLM training 16% slower here, so the processes a job
runs in get the default back, unless the user chose a policy.

`serving_threads` caps torch's intra-op threads in the serving process only. On 2 cores
shared with the clients, one thread answered 10,000-item searches in 18.2 ms p50 instead of
29.7 ms (`bench/search_latency.py --quick`); on a quiet machine two threads encode a query
faster (9.5 vs 12.7 ms), hence not the default. Job processes read their own settings.
On ONNX Runtime (the serving default, see `tasks.embedding.onnx_encoder`) the setting sizes
its pool instead, and made no difference here (2,000 items: 19.7 vs 19.8 ms p50).
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


def limit_threads(threads: int | None) -> None:
    """Cap torch's intra-op threads in the calling thread (imports torch when given)."""
    if threads is None:
        return
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
