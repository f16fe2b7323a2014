"""`python -m fineloop.jobs.rank SPEC`: one rank of a job's distributed training step.

Started N times by torchrun or `accelerate launch` (see `fineloop.jobs.distributed`, which
explains the split). Every rank runs the task's `train` on the same snapshot into the same
folder; the Trainer sets up DDP from the launcher's environment. Rank 0 reports through the
channel file the job process relays; the others report nothing. A rank whose job process or
launcher disappears exits, so a killed job leaves no training behind.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fineloop.errors import FineloopError
from fineloop.tasks.base import NullSink, ProgressSink


class Channel:
    """Rank 0's sink (and any rank's refusal): one JSON line per report, appended and
    flushed at once. Cancelling is the job process's business (it stops all ranks
    together), so this never says cancelled."""

    def __init__(self, path: Path) -> None:
        self.handle = path.open("a", encoding="utf-8")

    def send(self, **report: Any) -> None:
        self.handle.write(json.dumps(report) + "\n")
        self.handle.flush()

    def progress(self, fraction: float, message: str = "") -> None:
        self.send(progress=[fraction, message])

    def metric(self, name: str, step: int, value: float) -> None:
        self.send(metric=[name, step, value])

    def log(self, message: str) -> None:
        self.send(log=message)

    def cancelled(self) -> bool:
        return False


def _watch(parent: int) -> None:
    """Exit when the job process or our launcher is gone: nobody would use the result."""
    launcher = os.getppid()
    while True:
        time.sleep(1.0)
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(3)
        except PermissionError:
            pass
        if os.getppid() != launcher:
            os._exit(3)


def main(argv: list[str] | None = None) -> int:
    """One rank: train with the task, report on rank 0, wait for the others, exit."""
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    rank = int(os.environ.get("RANK", "0"))
    threading.Thread(target=_watch, args=(int(spec["parent"]),), daemon=True).start()
    # Launchers start ranks in sessions of their own: the job process finds them by these.
    (Path(args[0]).parent / f"rank-{rank}.pid").write_text(str(os.getpid()))
    from fineloop.tasks import get_task

    channel = Channel(Path(spec["channel"])) if rank == 0 else None
    sink: ProgressSink = channel if channel is not None else NullSink()
    _pin_device()
    try:
        task = get_task(spec["task"])
        config = task.train_config(spec["config"])
        task.train(Path(spec["snapshot"]), spec["base_model"], config, Path(spec["out_dir"]), sink)
    except FineloopError as error:
        # Every rank reports its refusal (one appended line each): the rank that fails
        # first may end the others before rank 0 gets to say why.
        failure = {"kind": type(error).__name__, "message": error.message}
        (channel or Channel(Path(spec["channel"]))).send(error=failure | {"field": error.field})
        return 1
    world = _world()
    if channel is not None:
        channel.send(done=world)
    return 0


def _pin_device() -> None:
    """On GPUs, make "cuda" mean this rank's own device before anything loads a model."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def _world() -> dict[str, Any]:
    """The process group the trainer set up (all ranks wait here for each other)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return {"world_size": 1, "backend": None}
    found = {"world_size": dist.get_world_size(), "backend": str(dist.get_backend())}
    dist.barrier()
    dist.destroy_process_group()
    return found


if __name__ == "__main__":
    sys.exit(main())
