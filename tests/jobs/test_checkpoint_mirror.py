"""On a URL artifact root a training job's checkpoints are mirrored to the store while it
trains, so a retry on another machine (its own, empty disk) resumes from them.

Two "machines" are two data dirs sharing one database and one in-memory fsspec root. The
first loses the job after a checkpoint was mirrored (as a worker does when its job is taken
away); the job is queued again, claimed by the second, which resumes and finishes it.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fineloop.api import create_app
from fineloop.config import Settings
from fineloop.jobs import checkpoint_mirror, queue
from fineloop.jobs import store as jobs
from fineloop.jobs.checkpoint_mirror import CheckpointMirror, mirror_location
from fineloop.jobs.runner import Terminated, execute, job_folder, sweep_scratch
from fineloop.jobs.service import start_training
from fineloop.jobs.sink import StoreSink
from fineloop.store import Store
from handmade_snapshot import ITEMS, QUERIES

TRAIN = {  # 16 steps an epoch, a checkpoint after each
    "epochs": 3,
    "batch_size": 3,
    "learning_rate": 1e-3,
    "warmup_ratio": 0.0,
    "precision": "fp32",
    "logging_steps": 1,
    "early_stopping_patience": None,
}


class LostMachine(StoreSink):
    """Reports like a worker's sink until a checkpoint is mirrored and training has gone
    past it; then the machine is gone (the job stays running, as after a kill)."""

    def __init__(self, store: Store, job_id: int, mirror: CheckpointMirror) -> None:
        super().__init__(store, job_id)
        self.mirror = mirror
        self.mirrored_step = 0

    def progress(self, fraction: float, message: str = "") -> None:
        super().progress(fraction, message)
        words = message.split()
        if not (len(words) == 2 and words[0] == "step"):
            return
        step = int(words[1].split("/")[0])
        if self.mirrored_step and step > self.mirrored_step:
            raise Terminated("the machine was lost", leave=True)
        steps = [int(path.rpartition("-")[2]) for path in self.mirror.remote()]
        self.mirrored_step = max(steps, default=0)


def seed(settings: Settings, store: Store, tiny_model: Path) -> None:
    with TestClient(create_app(settings, store)) as client:
        policy = {"train": TRAIN, "bootstrap_samples": 200, "max_attempts": 2}
        body = {"name": "faq", "task": "embedding", "base_model": str(tiny_model)}
        ok(client.post("/v1/projects", json=body | {"training_policy": policy}), 201)
        items = [{"id": key, "text": text} for key, text in ITEMS.items()]
        ok(client.put("/v1/projects/faq/items", json={"items": items}))
        labels = [
            {"kind": "label", "input": query, "items": [item]}
            for item, queries in QUERIES.items()
            for query in queries
        ]
        ok(client.post("/v1/projects/faq/feedback/batch", json={"events": labels}), 201)


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def test_a_retry_on_another_machine_resumes_from_the_mirrored_checkpoint(
    settings: Settings,
    store: Store,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(checkpoint_mirror, "INTERVAL", 0.2)
    root = f"memory://fl-{uuid.uuid4().hex[:8]}/artifacts"
    first = settings.model_copy(update={"artifact_root": root})
    second = settings.model_copy(update={"artifact_root": root, "data_dir": tmp_path / "b"})
    seed(first, store, tiny_model)

    job = start_training(store, "faq", claimed_by="machine-a")
    mirror = CheckpointMirror(first, "faq", job.id, job_folder(first, "faq", job.id))
    lost = LostMachine(store, job.id, mirror)
    assert execute(store, first, job.id, lost) == jobs.RUNNING
    mirrored = sorted(mirror.remote())
    assert mirrored and lost.mirrored_step > 0
    with store.write() as session:
        assert queue.give_back(session, jobs.get_job(session, job.id), "machine-a was lost")
        claimed = queue.claim_next(session, "machine-b")
        assert claimed is not None and claimed.id == job.id

    assert not job_folder(second, "faq", job.id).exists()  # nothing on the second disk
    assert execute(store, second, job.id, StoreSink(store, job.id)) == jobs.SUCCEEDED

    with store.read() as session:
        done = jobs.job_public(session, jobs.get_job(session, job.id))
        messages = [event.message for event in jobs.events(session, job.id)]
        losses = jobs.metric_series(session, job.id)["loss"]
    assert done["attempts"] == 2 and done["result"]["version"] == "v1"
    assert any(m.startswith("restored ") for m in messages), messages
    resumed = [m for m in messages if m.startswith("resuming from checkpoint-")]
    assert len(resumed) == 1
    assert int(resumed[0].split()[2].split("-")[1].rstrip(",")) >= lost.mirrored_step
    # training went on from the checkpoint: the steps before it ran once, on machine a
    steps = [point["step"] for point in losses]
    assert steps.count(1) == 1 and max(steps) == 3 * 16
    # the job ended: its mirror is gone from the store and its folder from the disk
    assert not mirror.fs.exists(mirror_location(first, "faq", job.id).split("://")[1])
    assert not job_folder(second, "faq", job.id).exists()


def test_the_mirror_follows_the_trainers_rotation(settings: Settings, tmp_path: Path) -> None:
    root = f"memory://fl-{uuid.uuid4().hex[:8]}/artifacts"
    remote = settings.model_copy(update={"artifact_root": root})
    scratch = tmp_path / "job"
    mirror = CheckpointMirror(remote, "faq", 7, scratch)

    def save(step: int) -> Path:
        folder = scratch / ".work" / "checkpoints-fp32" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(bytes([step]) * 100)
        (folder / "trainer_state.json").write_text("{}")
        return folder

    save(4)
    half = scratch / ".work" / "checkpoints-fp32" / "checkpoint-8"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"still being written")  # no trainer_state yet
    assert mirror.scan() == [".work/checkpoints-fp32/checkpoint-4"]
    (half / "trainer_state.json").write_text("{}")
    save(12)
    (scratch / ".work" / "checkpoints-fp32" / "checkpoint-4").rename(scratch / "gone")
    assert mirror.scan() == [
        ".work/checkpoints-fp32/checkpoint-12",
        ".work/checkpoints-fp32/checkpoint-8",
    ]
    assert mirror.remote() == {
        ".work/checkpoints-fp32/checkpoint-8",
        ".work/checkpoints-fp32/checkpoint-12",
    }

    elsewhere = CheckpointMirror(remote, "faq", 7, tmp_path / "other")
    assert sorted(elsewhere.restore()) == sorted(mirror.remote())
    restored = tmp_path / "other" / ".work" / "checkpoints-fp32" / "checkpoint-12"
    assert (restored / "model.safetensors").read_bytes() == bytes([12]) * 100
    assert elsewhere.restore() == []  # a folder with checkpoints of its own is left alone


def fake_checkpoint(scratch: Path, step: int) -> None:
    folder = scratch / ".work" / "checkpoints-fp32" / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes([step]) * 100)
    (folder / "trainer_state.json").write_text("{}")


def test_a_starting_worker_sweeps_the_mirrors_of_ended_jobs_only(
    settings: Settings, store: Store, tiny_model: Path, tmp_path: Path
) -> None:
    root = f"memory://fl-{uuid.uuid4().hex[:8]}/artifacts"
    remote = settings.model_copy(update={"artifact_root": root})
    seed(remote, store, tiny_model)
    ended = start_training(store, "faq").id
    with store.write() as session:  # cancelled while queued for its retry
        jobs.request_cancel(session, ended)
    waiting = start_training(store, "faq").id
    mirrors = {}
    for job_id in (ended, waiting):
        scratch = tmp_path / f"elsewhere-{job_id}"  # another machine's disk
        fake_checkpoint(scratch, 4)
        mirrors[job_id] = CheckpointMirror(remote, "faq", job_id, scratch)
        assert mirrors[job_id].scan()

    assert sweep_scratch(store, remote) == [ended]
    assert mirrors[ended].remote() == set()
    assert mirrors[waiting].remote() == {".work/checkpoints-fp32/checkpoint-4"}
