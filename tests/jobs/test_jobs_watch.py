"""`fineloop jobs watch ID` against a live server: bar, metrics, reconnects, exit codes."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading

import httpx
from jobs_fixtures import MakeProject, fake_plugin, fake_project
from jobs_live import queue_job, server, wait_progress
from typer.testing import CliRunner, Result

from conftest import LiveServer, free_port
from fineloop.cli import app
from fineloop.config import Settings

__all__ = ["fake_plugin", "fake_project", "server"]


def watch(url: str, job_id: int) -> Result:
    return CliRunner().invoke(app, ["jobs", "watch", str(job_id), "--url", url])


def said(result: Result) -> str:
    return " ".join(result.output.split())


class DroppingProxy:
    """A TCP proxy to the server that cuts its first connection after `cut_after` bytes
    of answer, as a flaky network would; it keeps the start of every request it passed."""

    def __init__(self, port: int, cut_after: int) -> None:
        self.port, self.cut_after = port, cut_after
        self.requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.port))
            index = len(self.requests)
            self.requests.append(b"")
            limit = self.cut_after if index == 0 else None
            threading.Thread(target=self._pipe, args=(client, upstream, index), daemon=True).start()
            threading.Thread(
                target=self._answer, args=(upstream, client, limit), daemon=True
            ).start()

    def _pipe(self, source: socket.socket, target: socket.socket, index: int) -> None:
        try:
            while data := source.recv(4096):
                if len(self.requests[index]) < 4096:
                    self.requests[index] += data
                target.sendall(data)
        except OSError:
            pass

    def _answer(self, source: socket.socket, target: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := source.recv(4096):
                target.sendall(data)
                sent += len(data)
                if limit is not None and sent >= limit:
                    break
        except OSError:
            pass
        for end in (source, target):  # shutdown: a close alone leaves the other
            with contextlib.suppress(OSError):  # thread's recv, and the connection, open
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self.listener.close()


def test_watch_shows_the_job_to_its_end_and_resumes_after_a_dropped_connection(
    fake_project: MakeProject, server: LiveServer
) -> None:
    name = fake_project()
    job_id = queue_job(server.url, name, steps=12, step_seconds=0.25)
    wait_progress(server.url, job_id)
    proxy = DroppingProxy(server.port, cut_after=1200)
    try:
        result = watch(proxy.url, job_id)
    finally:
        proxy.close()
    assert result.exit_code == 0, result.output
    out = said(result)
    assert "connection lost" in out and "reconnecting" in out
    first, second = proxy.requests[0].lower(), proxy.requests[1].lower()
    assert b"accept: text/event-stream" in first and b"last-event-id" not in first
    assert b"last-event-id: " in second  # resumed where the cut left it
    # every line the job logged is shown exactly once across the two connections
    events = httpx.get(f"{server.url}/v1/jobs/{job_id}/events").json()
    logged = [e["message"] for e in events if e["kind"] == "log"]
    assert len(logged) >= 3  # the worker's, the snapshot's, the gate's
    live = out.split("latest metrics:")[0]  # what was shown while it ran
    for line in logged:
        assert live.count(" ".join(line.split())) == 1, line
    finals = live.split("queued running ")  # each state once, in order
    assert len(finals) == 2 and finals[1].count("succeeded: v1 registered") == 1
    assert "latest metrics: eval_score 0.6000 (step 12), loss 0.0833 (step 12)" in out
    assert "gate passed" in out
    assert f"job {job_id} succeeded: v1 registered and promoted to champion" in out


def test_watch_exits_with_the_job_state_and_explains_what_it_cannot_do(
    settings: Settings, fake_project: MakeProject, server: LiveServer
) -> None:
    name = fake_project()
    broken = queue_job(server.url, name, fail=True)
    failed = watch(server.url, broken)
    assert failed.exit_code == 1, failed.output
    assert f"job {broken} failed: RuntimeError: the fake trainer broke on purpose" in said(failed)

    slow = queue_job(server.url, name, steps=200, step_seconds=0.2)
    wait_progress(server.url, slow)

    asked: list[str] = []

    def cancel_soon() -> None:  # `fineloop jobs cancel`, from another terminal
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINELOOP_")}
        env["FINELOOP_DATA_DIR"] = str(settings.data_dir)
        if settings.database_url:
            env["FINELOOP_DATABASE_URL"] = settings.database_url
        command = [sys.executable, "-m", "fineloop", "jobs", "cancel", str(slow)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        asked.append(done.stdout)

    timer = threading.Timer(1.0, cancel_soon)
    timer.start()
    cancelled = watch(server.url, slow)
    timer.join()
    assert f"job {slow}: cancel requested; it stops within seconds" in asked[0]
    assert cancelled.exit_code == 3, cancelled.output
    assert "cancel requested" in said(cancelled)
    assert f"job {slow} cancelled" in said(cancelled)
    after = queue_job(server.url, name, steps=2)  # the worker is free again at once
    assert watch(server.url, after).exit_code == 0

    missing = watch(server.url, 999)
    assert missing.exit_code == 1 and "unknown job 999" in said(missing)
    nobody = watch(f"http://127.0.0.1:{free_port()}", 1)
    assert nobody.exit_code == 1 and "cannot reach" in said(nobody)
