"""Where and how this process computes: device, precision and its rank in a distributed run.

Every task family trains and serves with torch, so these answers live here once rather
than inside one family. torch is imported only when a question needs it.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path


def device() -> str:
    """ "cuda" when a GPU is present, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@cache
def supports_bf16() -> bool:
    """Whether training in bf16 is faster here: CUDA with bf16, or a CPU whose flags show
    native bf16 math (AVX-512 BF16 or AMX); elsewhere bf16 autocast is emulated and slower."""
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_supported(device: str) -> bool:
    """Whether inference on `device` can autocast to bf16 at all (oneDNN or CUDA)."""
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def world_size() -> int:
    """Processes training together (torchrun's WORLD_SIZE; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this process writes files and scores models: always, except on the ranks
    other than 0 of a distributed run (they only train alongside)."""
    return int(os.environ.get("RANK", "0")) == 0


def rank_zero_decides(decision: bool) -> bool:
    """Rank 0's decision on every rank, so that all take the same branch: a rank that
    trained again alone would wait for the others forever. Also a meeting point: when it
    returns, every rank is done with the run's checkpoints (rank 0 then deletes them)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return decision
    dist.barrier()
    box: list[object] = [decision]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def last_checkpoint(checkpoints: Path) -> Path | None:
    """The newest complete checkpoint an earlier run left in `checkpoints`. The Trainer
    writes trainer_state.json last, so a run killed while saving leaves none there, or one
    cut short (seen empty after a SIGKILL): only a state that reads whole counts."""
    found = [
        (int(path.name.rpartition("-")[2]), path)
        for path in checkpoints.glob("checkpoint-*")
        if path.name.rpartition("-")[2].isdigit() and _whole_state(path / "trainer_state.json")
    ]
    return max(found)[1] if found else None


def _whole_state(path: Path) -> bool:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and "global_step" in state
