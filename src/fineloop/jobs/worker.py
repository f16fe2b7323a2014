"""A worker: claim queued jobs from the store and run them, `concurrency` at a time.

`fineloop serve` runs one inside the server; `fineloop worker` runs one on its own, on this
machine or any other that reaches the same (PostgreSQL) store. Each slot thread only claims,
spawns and watches: the job itself runs in `python -m fineloop.jobs.run JOB_ID`, so a job
that crashes, runs out of memory or is killed takes only that process down. Kinds that
declare themselves light run in the slot thread instead. A heartbeat thread keeps the
claimed jobs alive in the store and gives back those of workers that died.

The watcher turns a cancel into SIGTERM (SIGKILL after a grace period), an exit without a
recorded ending into a failed job with the tail of the child's output, and a stop of the
worker into a job queued again (attempts left) or failed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from fineloop.config import Settings
from fineloop.jobs import queue
from fineloop.jobs import store as jobs
from fineloop.jobs.heartbeat import Heartbeat
from fineloop.jobs.runner import (
    clear_scratch,
    execute,
    known_kinds,
    runs_in_process,
    sweep_scratch,
)
from fineloop.jobs.sink import StoreSink
from fineloop.store import Store
from fineloop.store.schema import Job
from fineloop.threads import for_training

log = logging.getLogger("fineloop.worker")
TAIL_CHARS = 2000
STOPPED = "the worker stopped while the job ran"


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def is_alive(worker: str) -> bool:
    """Whether a worker named `host:pid` still runs; True when it is on another machine
    (nothing here can tell: its heartbeat will)."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def child_env(settings: Settings) -> dict[str, str]:
    """This process's environment with the settings spelled out, so the child opens the
    same store and artifact root whatever config file or flags this process was given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINELOOP_")}
    for name, value in settings.model_dump(mode="json").items():
        if isinstance(value, (dict, list)):
            text = json.dumps(value)
        elif value is None:
            text = "null"
        else:
            text = str(value).lower() if isinstance(value, bool) else str(value)
        env[f"FINELOOP_{name.upper()}"] = text
    env |= {
        "FINELOOP_DATA_DIR": str(Path(settings.data_dir).resolve()),
        "FINELOOP_DATABASE_URL": settings.resolved_database_url,
        "FINELOOP_ARTIFACT_ROOT": settings.resolved_artifact_root,
    }
    env.setdefault("TQDM_DISABLE", "1")  # library progress bars would flood the job's log
    return for_training(env)


def log_path(settings: Settings, job_id: int) -> Path:
    return Path(settings.data_dir).resolve() / "logs" / f"job-{job_id}.log"


@dataclass
class Run:
    """One attempt of a job in this worker; `lost` is set when the job was taken away."""

    job_id: int
    attempt: int
    lost: bool = False


class Worker:
    """Slot threads that run the store's queued jobs, plus their heartbeat."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        concurrency: int = 1,
        kinds: Collection[str] | None = None,
        poll_seconds: float = 1.0,
        grace_seconds: float = 10.0,
        name: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.store, self.settings = store, settings
        self.concurrency = concurrency
        self.kinds = sorted(kinds) if kinds is not None else known_kinds()
        self.poll_seconds, self.grace_seconds = poll_seconds, grace_seconds
        self.name = name or worker_name()
        self.heartbeat = Heartbeat(store, settings, self.name, on_lost=self._lost)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._runs: dict[int, Run] = {}

    @property
    def running(self) -> list[int]:
        """Ids of the jobs this worker runs now."""
        return sorted(self._runs)

    @property
    def current(self) -> int | None:
        return next(iter(self.running), None)

    def start(self) -> list[int]:
        """Give back jobs left running by dead processes of this machine, then start
        claiming; returns the ids given back (queued again or failed)."""
        with self.store.write() as session:
            recovered = queue.recover_orphans(session, is_alive)
        for job_id in recovered:
            with self.store.read() as session:
                state = jobs.get_job(session, job_id).state
            log.warning("job %s was left running by a dead process: now %s", job_id, state)
            if state in jobs.FINISHED:
                clear_scratch(self.store, self.settings, job_id)
        sweep_scratch(self.store, self.settings)
        self.heartbeat.start()
        for slot in range(self.concurrency):
            thread = threading.Thread(target=self._loop, name=f"fineloop-worker-{slot}")
            thread.daemon = True
            thread.start()
            self._threads.append(thread)
        return recovered

    def wake(self) -> None:
        """Look for queued jobs now instead of at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; running children are stopped and their jobs queued again (while
        attempts remain) or failed. Light jobs running in a slot are let finish."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.heartbeat.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._claim()
                if job is not None:
                    self._run(job)
                    continue
            except Exception:  # a store hiccup must not end the worker
                log.exception("worker loop error")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def _claim(self) -> Job | None:
        with self.store.read() as session:
            if not queue.has_queued(session, self.kinds):
                return None
        with self.store.write() as session:
            return queue.claim_next(session, self.name, self.kinds)

    def _lost(self, job_id: int) -> None:
        run = self._runs.get(job_id)
        if run is not None:
            run.lost = True

    def _run(self, job: Job) -> None:
        run = Run(job.id, job.attempts)
        self._runs[job.id] = run
        self.heartbeat.hold(job.id, job.attempts)
        try:
            try:
                light = runs_in_process(job.kind)
            except Exception:  # cannot even load it: `execute` records why
                light = True
            if light:
                execute(self.store, self.settings, job.id, StoreSink(self.store, job.id))
            else:
                self._run_child(run)
        finally:
            self.heartbeat.release(job.id)
            self._runs.pop(job.id, None)

    def _run_child(self, run: Run) -> None:
        path = log_path(self.settings, run.job_id)
        child = self._spawn(run, path)
        if child is not None:
            stopping = self._watch(run, child)
            self._settle(run, child.returncode, stopping, path)

    def _spawn(self, run: Run, path: Path) -> subprocess.Popen[bytes] | None:
        """Start the job's process (output to its log file); None if it cannot start."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("ab") as output:
                child = subprocess.Popen(
                    [sys.executable, "-m", "fineloop.jobs.run", str(run.job_id)],
                    env=child_env(self.settings),
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C at the terminal reaches the worker only
                )
        except OSError as error:
            reason = f"could not start the job's process: {error}"
            with self.store.write() as session:
                jobs.finish(
                    session,
                    run.job_id,
                    jobs.FAILED,
                    f"failed: {reason}",
                    error=reason,
                    attempt=run.attempt,
                )
            return None
        with self.store.write() as session:
            message = f"attempt {run.attempt} running in process {child.pid} ({self.name})"
            data = {"pid": child.pid, "log": str(path), "attempt": run.attempt}
            jobs.add_event(session, run.job_id, "log", message, data)
        return child

    def _watch(self, run: Run, child: subprocess.Popen[bytes]) -> bool:
        """Wait for the child; stop it on cancel, stop or loss. True if the worker stopped."""
        terminated_at: float | None = None
        stopping = False
        while child.poll() is None:
            if run.lost:
                child.kill()  # the job belongs to another worker now
            elif terminated_at is None:
                stopping = self._stop.is_set()
                with self.store.read() as session:
                    cancel = jobs.cancel_requested(session, run.job_id)
                if cancel or stopping:
                    child.send_signal(signal.SIGTERM)
                    terminated_at = time.monotonic()
            elif time.monotonic() - terminated_at > self.grace_seconds:
                child.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(0.25)
        return stopping

    def _settle(self, run: Run, code: int | None, stopping: bool, path: Path) -> None:
        """Record an ending the child could not record itself; clear its scratch folders
        once the job has ended (a job queued again keeps them: its checkpoints)."""
        with self.store.write() as session:
            job = jobs.get_job(session, run.job_id)
            mine = job.attempts == run.attempt and job.worker == self.name
            if run.lost:
                message = f"attempt {run.attempt} stopped: {self.name} no longer holds the job"
                jobs.add_event(session, run.job_id, "log", message, {"attempt": run.attempt})
            elif job.state == jobs.RUNNING and mine:
                if stopping or job.cancel_requested:
                    queue.give_back(session, job, STOPPED)
                else:
                    error = _exit_reason(code, _tail(path))
                    jobs.finish(
                        session,
                        run.job_id,
                        jobs.FAILED,
                        f"failed: {error}",
                        error=error,
                        attempt=run.attempt,
                    )
        with self.store.read() as session:
            state = jobs.get_job(session, run.job_id).state
        if state in jobs.FINISHED:
            clear_scratch(self.store, self.settings, run.job_id)


def _exit_reason(code: int | None, tail: str) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        why = f"the job's process was killed by {name}{hint}"
    elif code is not None and code - 128 in set(signal.Signals):
        why = f"the job's process was stopped by {signal.Signals(code - 128).name}"
    else:
        why = f"the job's process exited with code {code} without finishing the job"
    return f"{why}; last output:\n{tail}" if tail else why


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()[-TAIL_CHARS:]
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace").strip()
