"""Reliability: `kill -9` of a standalone worker in the middle of a training epoch.

A tiny sentence model trains for a few epochs, checkpointing after each. Once the first
checkpoint is written and the next epoch is under way, the worker running the job is
killed with SIGKILL (its job process follows it). A second worker notices the job's
heartbeat went stale, queues it again and runs it: it resumes from the checkpoint and
succeeds. Meanwhile a watcher searches the live server without pause and lists the
versions: every search is answered by the champion, and no version shows up before the
job that registers it has succeeded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from jobs_workers import WorkerProcess

from conftest import LiveServer
from fineloop.config import Settings
from fineloop.sdk import Client
from handmade_snapshot import ITEMS, QUERIES

TRAIN = {  # 16 steps an epoch: a killed run never reaches the end before it notices
    "epochs": 4,
    "batch_size": 3,
    "learning_rate": 1e-3,
    "warmup_ratio": 0.0,
    "precision": "fp32",
    "logging_steps": 1,
    "early_stopping_patience": None,
}
FAST = {"FINELOOP_JOB_HEARTBEAT_SECONDS": "0.5", "FINELOOP_JOB_STALE_SECONDS": "3"}


def wait_until(check: Callable[[], bool], timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not in time: {what}"
        time.sleep(0.1)


@dataclass
class Watcher:
    """Searches and lists versions in a loop, recording anything a user should not see."""

    url: str
    job_id: int = 0
    searches: int = 0
    problems: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.stop.is_set():
                self.check(http)
                time.sleep(0.25)

    def check(self, http: httpx.Client) -> None:
        found = http.post("/v1/projects/faq/search", json={"query": "lost my card", "k": 3})
        if found.status_code != 200 or not found.json()["items"]:
            self.problems.append(f"search: {found.status_code} {found.text[:200]}")
        else:
            self.searches += 1
        for version in http.get("/v1/projects/faq/versions").json():
            if version["version"] == "v0":
                continue
            job = http.get(f"/v1/jobs/{self.job_id}").json()
            if job["state"] != "succeeded":
                self.problems.append(f"{version['version']} visible while the job is {job}")
            if not (Path(version["artifact_uri"]) / "fineloop.json").is_file():
                self.problems.append(f"{version['version']} is incomplete on disk")


@pytest.fixture
def server(settings: Settings, tiny_model: Path) -> Iterator[tuple[LiveServer, Client]]:
    """A server without a worker of its own, serving a tiny model's project."""
    live = LiveServer(settings, args=("--no-worker",))
    with Client(live.url) as client:
        client.create_project("faq", "embedding", base_model=str(tiny_model))
        client.update_project(
            "faq", training_policy={"train": TRAIN, "bootstrap_samples": 200, "max_attempts": 2}
        )
        client.upsert_items("faq", [{"id": k, "text": v} for k, v in ITEMS.items()])
        labels: list[dict[str, Any]] = [
            {"kind": "label", "input": query, "items": [item]}
            for item, queries in QUERIES.items()
            for query in queries
        ]
        client.send_feedback_batch("faq", labels)
        yield live, client
    live.stop()


def checkpoint_steps(folder: Path) -> list[int]:
    """Steps of the complete checkpoints in the job's folder (trainer_state.json is last)."""
    return sorted(
        int(path.parent.name.rpartition("-")[2])
        for path in folder.glob(".work/checkpoints-*/checkpoint-*/trainer_state.json")
    )


def step_of(job: dict[str, Any]) -> int:
    """The trainer's step from the job's message ("step 12/90"), 0 before training."""
    words = job["message"].split()
    if len(words) == 2 and words[0] == "step" and "/" in words[1]:
        return int(words[1].split("/")[0])
    return 0


def test_kill_9_of_a_worker_mid_epoch_retries_the_job_from_its_checkpoint(
    server: tuple[LiveServer, Client], settings: Settings, tmp_path: Path
) -> None:
    live, client = server
    wait_until(lambda: bool(client.search("faq", "lost my card")["items"]), what="serving")
    job_id = client.train("faq")["id"]
    watcher = Watcher(live.url, job_id)
    watching = threading.Thread(target=watcher.run, daemon=True)
    watching.start()
    first = WorkerProcess(settings, tmp_path / "worker-1.log", **FAST)
    second: WorkerProcess | None = None
    try:
        wait_until(lambda: client.job(job_id)["worker"] == first.name, what="first claims")
        second = WorkerProcess(settings, tmp_path / "worker-2.log", **FAST)  # idle, watching
        folder = Path(settings.resolved_artifact_root) / "faq" / "tmp" / f"job{job_id}"
        wait_until(lambda: bool(checkpoint_steps(folder)), what="first checkpoint")
        saved = checkpoint_steps(folder)[-1]
        wait_until(lambda: step_of(client.job(job_id)) > saved, what="next epoch under way")
        first.kill()  # SIGKILL: no handler runs, nothing is recorded
        assert [v["version"] for v in client.versions("faq")] == ["v0"]
        job = client.wait(job_id, timeout=180, poll=0.5)
    finally:
        watcher.stop.set()
        watching.join(60)
        first.kill()
        if second is not None:
            second.kill()
    assert job["state"] == "succeeded", job["error"]
    assert (job["attempts"], job["worker"]) == (2, second.name)
    messages = [event["message"] for event in client.job_events(job_id)]
    lost = f"queued again for attempt 2 of 2: its worker {first.name} stopped sending heartbeats"
    assert any(message.startswith(lost) for message in messages), messages
    resumed = [m for m in messages if m.startswith("resuming from checkpoint-")]
    assert len(resumed) == 1 and int(resumed[0].split()[2].split("-")[1].rstrip(",")) >= saved
    # the second attempt went on from the checkpoint: the first steps were trained once
    losses = client.job_metrics(job_id)["loss"]
    assert [point["step"] for point in losses].count(1) == 1
    assert max(point["step"] for point in losses) > saved
    assert [v["version"] for v in client.versions("faq")] == ["v0", "v1"]
    assert not folder.exists()  # the job's scratch folder went with its success
    assert watcher.problems == []
    assert watcher.searches > 0
