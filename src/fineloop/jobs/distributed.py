"""Training one job on several processes (DDP), launched with torchrun or `accelerate launch`.

Only the training step runs distributed. The job's own process (`fineloop.jobs.run`, or the
CLI in the foreground) builds the snapshot first, then launches N copies of
`fineloop.jobs.rank` and waits; evaluation, the gate, publishing and registering stay in the
job process, exactly as with one process. That is the simplest correct split:

- every rank reads the same snapshot folder, built once before the launch: no race, no
  barrier, no second build;
- each rank runs the task's ordinary `train` into the same output folder. Hugging Face's
  Trainer reads the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK) and sets up DDP
  itself: gloo on a CPU, nccl on GPUs; a task must write files on rank 0 only (the embedding
  task does, see `fineloop.runtime.is_main_process`);
- only rank 0 reports, and not to the store: it appends progress, metrics and log lines to a
  channel file that the job process relays to its own sink (store, progress bar), so the
  job's events look the same as with one process. Ranks never register anything;
- cancel and SIGTERM reach the job process, which ends the launcher's process group; if the
  job process is killed, the ranks notice (they watch its pid) and exit.

One machine, N processes (one per GPU). Multi-node training would need the same rank
command started on every node; it is not launched from here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from fineloop import errors
from fineloop.config import Settings
from fineloop.errors import FineloopError, Invalid
from fineloop.tasks.base import JobCancelled, ProgressSink, Task

LAUNCHERS = ("torchrun", "accelerate")
MAX_NPROC = 64
POLL_SECONDS = 0.2
GRACE_SECONDS = 10.0
TAIL_CHARS = 2000


@dataclass(frozen=True)
class Launch:
    """How a job trains: `nproc` processes started by `launcher` (1: in the job process)."""

    nproc: int = 1
    launcher: str = "torchrun"


def launch_options(nproc: int | None, launcher: str | None) -> dict[str, Any]:
    """A job's own launch settings, checked before the job is queued (for its config)."""
    found: dict[str, Any] = {}
    if nproc is not None:
        if not 1 <= nproc <= MAX_NPROC:
            raise Invalid(f"nproc must be between 1 and {MAX_NPROC}, not {nproc}", field="nproc")
        found["nproc"] = nproc
    if launcher is not None:
        if launcher not in LAUNCHERS:
            raise Invalid(
                f"launcher must be one of {', '.join(LAUNCHERS)}, not {launcher!r}",
                field="launcher",
            )
        found["launcher"] = launcher
    return found


def launch_of(settings: Settings, job_config: dict[str, Any]) -> Launch:
    """The job's launch settings over the worker's defaults (`train_nproc`, `train_launcher`)."""
    own = job_config.get("launch") or {}
    return Launch(
        nproc=int(own.get("nproc") or settings.train_nproc),
        launcher=str(own.get("launcher") or settings.train_launcher),
    )


def log_path(settings: Settings, job_id: int) -> Path:
    """Where the ranks' own output goes (the job's log keeps the relayed reports)."""
    return Path(settings.data_dir).resolve() / "logs" / f"job-{job_id}-ranks.log"


def train(
    task: Task,
    snapshot: Path,
    base_model: str,
    config: BaseModel,
    out_dir: Path,
    sink: ProgressSink,
    *,
    launch: Launch,
    log: Path,
) -> tuple[Path, dict[str, Any]]:
    """`task.train`, here or on `launch.nproc` processes; returns the model folder and what
    the run was: processes, launcher, the world size and backend the ranks really had."""
    if launch.nproc <= 1:
        trained = task.train(snapshot, base_model, config, out_dir, sink)
        return trained, {"nproc": 1, "launcher": None, "world_size": 1, "backend": None}
    control = out_dir.with_name(out_dir.name + "-ranks")  # cleared with the job's scratch
    shutil.rmtree(control, ignore_errors=True)  # an earlier attempt's reports are not ours
    control.mkdir(parents=True)
    channel = control / "channel.jsonl"
    spec = {
        "task": task.name,
        "snapshot": str(snapshot),
        "base_model": base_model,
        "config": config.model_dump(mode="json"),
        "out_dir": str(out_dir),
        "channel": str(channel),
        "parent": os.getpid(),
    }
    (control / "spec.json").write_text(json.dumps(spec, indent=1))
    sink.log(f"training on {launch.nproc} processes ({launch.launcher}); output in {log}")
    log.parent.mkdir(parents=True, exist_ok=True)
    relay = Relay(channel, sink)
    with log.open("ab") as output:
        process = subprocess.Popen(
            command(launch, control / "spec.json"),
            env=os.environ | {"TQDM_DISABLE": "1"},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole
        )
    try:
        while process.poll() is None:
            relay.pump()
            if sink.cancelled():
                raise JobCancelled("training was cancelled")
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(POLL_SECONDS)
        relay.pump()
    finally:
        stop(process, control / "spec.json")
    return out_dir, _outcome(process.returncode, relay, launch, log)


def command(launch: Launch, spec: Path) -> list[str]:
    """The launcher's command line, running `fineloop.jobs.rank` on every rank."""
    entry = ["-m", "fineloop.jobs.rank", str(spec)]
    if launch.launcher == "accelerate":
        from accelerate.commands.config.config_args import (  # type: ignore[import-untyped]
            default_config_file,
        )

        args = ["--num_processes", str(launch.nproc), "--num_machines", "1"]
        if not Path(default_config_file).exists():  # else the user's `accelerate config`
            args.append("--multi_gpu")  # DDP; accelerate runs it on CPUs too (gloo)
        port = ["--main_process_port", str(_free_port())]
        return [sys.executable, "-m", "accelerate.commands.launch", *args, *port, *entry]
    torchrun = ["--standalone", "--nnodes", "1", "--nproc-per-node", str(launch.nproc)]
    return [sys.executable, "-m", "torch.distributed.run", *torchrun, *entry]


def stop(process: subprocess.Popen[bytes], spec: Path) -> None:
    """End the launcher and its ranks: SIGTERM, then SIGKILL after a grace period. The
    ranks are signalled directly too (launchers put them in sessions of their own, and
    torchrun itself would wait 30 s for them), found by the pid files they wrote."""
    for sig, wait in ((signal.SIGTERM, GRACE_SECONDS), (signal.SIGKILL, 5.0)):
        ranks = _live_ranks(spec)
        if process.poll() is not None and not ranks:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        for pid in ranks:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and (process.poll() is None or _live_ranks(spec)):
            time.sleep(0.1)


def _live_ranks(spec: Path) -> list[int]:
    """Pids of this launch's ranks still running (a pid file whose process runs the spec:
    a pid reused by another process is left alone)."""
    found = []
    for pid_file in spec.parent.glob("rank-*.pid"):
        pid = pid_file.read_text().strip()
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2][:1]
        except (OSError, ValueError):
            continue
        if str(spec) in cmdline and state != "Z":
            found.append(int(pid))
    return found


def _outcome(code: int, relay: Relay, launch: Launch, log: Path) -> dict[str, Any]:
    if relay.error is not None:
        kind = getattr(errors, str(relay.error.get("kind")), FineloopError)
        cls = kind if isinstance(kind, type) and issubclass(kind, FineloopError) else FineloopError
        raise cls(str(relay.error.get("message")), field=relay.error.get("field"))
    if code != 0 or relay.done is None:
        why = f"the {launch.nproc} training processes ({launch.launcher}) exited with code {code}"
        raise FineloopError(f"{why}; last output:\n{_tail(log)}")
    return {"nproc": launch.nproc, "launcher": launch.launcher, **relay.done}


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()[-TAIL_CHARS:]
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace").strip()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Relay:
    """Reads rank 0's channel file as it grows and replays each report on the job's sink."""

    def __init__(self, path: Path, sink: ProgressSink) -> None:
        self.path, self.sink = path, sink
        self.offset = 0
        self.error: dict[str, Any] | None = None
        self.done: dict[str, Any] | None = None

    def pump(self) -> None:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits
        self.offset += len(complete)
        for line in complete.splitlines():
            self._replay(json.loads(line))

    def _replay(self, report: dict[str, Any]) -> None:
        if "progress" in report:
            self.sink.progress(*report["progress"])
        elif "metric" in report:
            self.sink.metric(*report["metric"])
        elif "log" in report:
            self.sink.log(report["log"])
        elif "error" in report:
            self.error = self.error or report["error"]  # the first rank's reason
        elif "done" in report:
            self.done = report["done"]
