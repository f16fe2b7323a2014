"""The in-process worker of `fineloop serve`: claim queued jobs, run each in a child process.

One job at a time. The thread only claims, spawns and watches; the job itself runs in
`python -m fineloop.jobs.run JOB_ID`, so training that crashes, runs out of memory or is
killed takes only that process down. The watcher turns a cancel request into SIGTERM (then
SIGKILL after a grace period) and an exit without a recorded ending into a failed job with
the tail of the child's output. Issue 4 adds heartbeats and workers on other machines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from fineloop import artifacts
from fineloop.config import Settings
from fineloop.jobs import store as jobs
from fineloop.store import Store
from fineloop.store.schema import Project

log = logging.getLogger("fineloop.worker")
TAIL_CHARS = 2000


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def is_alive(worker: str) -> bool:
    """Whether a worker named `host:pid` still runs; True when it is on another machine
    (nothing here can tell: heartbeats will)."""
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
    env |= {
        "FINELOOP_DATA_DIR": str(Path(settings.data_dir).resolve()),
        "FINELOOP_DATABASE_URL": settings.resolved_database_url,
        "FINELOOP_ARTIFACT_ROOT": settings.resolved_artifact_root,
        "FINELOOP_SQLITE_SYNCHRONOUS": settings.sqlite_synchronous,
    }
    env.setdefault("TQDM_DISABLE", "1")  # library progress bars would flood the job's log
    return env


def log_path(settings: Settings, job_id: int) -> Path:
    return Path(settings.data_dir).resolve() / "logs" / f"job-{job_id}.log"


class Worker:
    """A daemon thread that runs the store's queued jobs one by one."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        poll_seconds: float = 1.0,
        grace_seconds: float = 10.0,
        name: str | None = None,
    ) -> None:
        self.store, self.settings = store, settings
        self.poll_seconds, self.grace_seconds = poll_seconds, grace_seconds
        self.name = name or worker_name()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.current: int | None = None

    def start(self) -> list[int]:
        """Fail jobs left running by dead processes, then start claiming; returns those ids."""
        with self.store.write() as session:
            failed = jobs.recover_orphans(session, is_alive)
        for job_id in failed:
            log.warning("job %s was left running by a dead process: marked failed", job_id)
        self._thread = threading.Thread(target=self._loop, name="fineloop-worker", daemon=True)
        self._thread.start()
        return failed

    def wake(self) -> None:
        """Look for queued jobs now instead of at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; a running job's child is terminated and the job marked failed."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job_id = self._claim()
                if job_id is not None:
                    self._run(job_id)
                    continue
            except Exception:  # a store hiccup must not end the worker
                log.exception("worker loop error")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def _claim(self) -> int | None:
        with self.store.read() as session:
            candidates = jobs.queued_ids(session)
        for job_id in candidates:
            with self.store.write() as session:
                if jobs.claim(session, job_id, self.name):
                    return job_id
        return None

    def _run(self, job_id: int) -> None:
        self.current = job_id
        try:
            path = log_path(self.settings, job_id)
            child = self._spawn(job_id, path)
            if child is not None:
                stopping = self._watch(job_id, child)
                self._settle(job_id, child.returncode, stopping, path)
        finally:
            self.current = None

    def _spawn(self, job_id: int, path: Path) -> subprocess.Popen[bytes] | None:
        """Start the job's process (output to its log file); None if it cannot start."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as output:
                child = subprocess.Popen(
                    [sys.executable, "-m", "fineloop.jobs.run", str(job_id)],
                    env=child_env(self.settings),
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C at the terminal reaches the server only
                )
        except OSError as error:
            reason = f"could not start the training process: {error}"
            with self.store.write() as session:
                jobs.finish(session, job_id, jobs.FAILED, f"failed: {reason}", error=reason)
            return None
        with self.store.write() as session:
            message = f"running in process {child.pid}"
            jobs.add_event(session, job_id, "log", message, {"pid": child.pid, "log": str(path)})
        return child

    def _watch(self, job_id: int, child: subprocess.Popen[bytes]) -> bool:
        """Wait for the child; terminate it on cancel or stop. True if the server stopped it."""
        terminated_at: float | None = None
        stopping = False
        while child.poll() is None:
            if terminated_at is None:
                stopping = self._stop.is_set()
                with self.store.read() as session:
                    cancel = jobs.cancel_requested(session, job_id)
                if stopping and not cancel:
                    error = "the server stopped while the job ran"
                    with self.store.write() as session:
                        jobs.finish(session, job_id, jobs.FAILED, f"failed: {error}", error=error)
                if cancel or stopping:
                    child.send_signal(signal.SIGTERM)
                    terminated_at = time.monotonic()
            elif time.monotonic() - terminated_at > self.grace_seconds:
                child.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(0.25)
        return stopping

    def _settle(self, job_id: int, code: int | None, stopping: bool, path: Path) -> None:
        """Record an ending the child could not record itself; clear its scratch folders."""
        with self.store.write() as session:
            job = jobs.get_job(session, job_id)
            project = session.get(Project, job.project_id)
            if job.state == jobs.RUNNING:
                if job.cancel_requested:
                    jobs.finish(session, job_id, jobs.CANCELLED, "cancelled")
                else:
                    error = _exit_reason(code, stopping, _tail(path))
                    jobs.finish(session, job_id, jobs.FAILED, f"failed: {error}", error=error)
        if project is not None:
            tmp = artifacts.root(self.settings) / project.name / "tmp"
            for folder in tmp.glob(f"job{job_id}-*"):
                shutil.rmtree(folder, ignore_errors=True)


def _exit_reason(code: int | None, stopping: bool, tail: str) -> str:
    if stopping:
        return "the server stopped while the job ran"
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        why = f"the training process was killed by {name}{hint}"
    else:
        why = f"the training process exited with code {code} without finishing the job"
    return f"{why}; last output:\n{tail}" if tail else why


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()[-TAIL_CHARS:]
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace").strip()
