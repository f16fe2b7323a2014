"""One training job on two CPU processes (torchrun, DDP over gloo) makes the same kind of
version as one process: same files, same config keys, registered, loadable, with metrics;
and the run really had two processes (the ranks' process group, and the Trainer's state).

The real embedding task on the tiny model and hand-made data, one epoch: the job runs in
this process as a worker's child would, and its training step launches the two ranks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fineloop.cli import app
from fineloop.config import Settings
from fineloop.errors import Invalid
from fineloop.jobs import store as jobs
from fineloop.jobs.distributed import Launch, command, launch_of
from fineloop.jobs.runner import execute, job_folder
from fineloop.jobs.service import start_training
from fineloop.jobs.sink import StoreSink
from fineloop.jobs.train import TRAIN as TRAIN_STAGE
from fineloop.jobs.worker import child_env
from fineloop.store import Store
from fineloop.tasks import get_task
from handmade_snapshot import ITEMS, QUERIES

ONE_EPOCH = {
    "epochs": 1,
    "batch_size": 8,
    "learning_rate": 1e-3,
    "warmup_ratio": 0.0,
    "precision": "fp32",
    "logging_steps": 1,
    "early_stopping_patience": None,
}

# Hundreds of steps: stopped long before the end. The no-duplicates sampler (mnrl) may run
# out of distinct batches on this tiny data and end an epoch early; cosent's sampler won't.
LONG = {"epochs": 100, "batch_size": 4, "loss": "cosent"}


def seed(client: TestClient, name: str, base_model: Path) -> None:
    """An embedding project on the tiny model: 18 items, four labelled queries each."""
    policy = {"train": ONE_EPOCH, "bootstrap_samples": 200}
    body = {"name": name, "task": "embedding", "base_model": str(base_model)}
    ok(client.post("/v1/projects", json=body | {"training_policy": policy}), 201)
    items = [{"id": key, "text": text} for key, text in ITEMS.items()]
    ok(client.put(f"/v1/projects/{name}/items", json={"items": items}))
    labels = [
        {"kind": "label", "input": query, "items": [item]}
        for item, queries in QUERIES.items()
        for query in queries
    ]
    ok(client.post(f"/v1/projects/{name}/feedback/batch", json={"events": labels}), 201)


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def run_job(
    store: Store, settings: Settings, name: str, nproc: int | None, launcher: str | None = None
) -> dict[str, Any]:
    job = start_training(store, name, claimed_by="test-worker", nproc=nproc, launcher=launcher)
    state = execute(store, settings, job.id, StoreSink(store, job.id))
    with store.read() as session:
        done = jobs.job_public(session, jobs.get_job(session, job.id))
        lines = [e.message for e in jobs.events(session, job.id)]
    assert state == jobs.SUCCEEDED, (done["error"], lines[-5:])
    return done | {"lines": lines}


def files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_two_gloo_processes_train_one_job_into_the_same_kind_of_version(
    client: TestClient, store: Store, settings: Settings, tiny_model: Path
) -> None:
    seed(client, "faq", tiny_model)
    single = run_job(store, settings, "faq", None)
    ddp = run_job(store, settings, "faq", 2)

    versions = {v["version"]: v for v in ok(client.get("/v1/projects/faq/versions"))}
    assert set(versions) == {"v0", "v1", "v2"}
    one, two = versions[single["result"]["version"]], versions[ddp["result"]["version"]]
    assert two["job_id"] == ddp["id"] and one["job_id"] == single["id"]

    # the same kind of version: files, config keys, metrics of base, champion and candidate
    one_dir, two_dir = Path(one["artifact_uri"]), Path(two["artifact_uri"])
    assert files(one_dir) == files(two_dir) and "fineloop.json" in files(two_dir)
    assert set(one["config"]) == set(two["config"]) == {"train", "overrides", "launch"}
    assert one["config"]["train"] == two["config"]["train"]
    assert set(one["metrics"]) == set(two["metrics"])
    for role in ("base", "champion", "candidate"):
        assert set(two["metrics"][role]) == set(one["metrics"][role]), role
    assert two["metrics"]["examples"] == one["metrics"]["examples"] > 0
    stamps = [json.loads((d / "fineloop.json").read_text()) for d in (one_dir, two_dir)]
    assert set(stamps[0]) == set(stamps[1]) and set(stamps[0]["trainer"]) == set(
        stamps[1]["trainer"]
    )

    # it really ran on two processes: the ranks' process group and the Trainer's own state
    assert one["config"]["launch"] == {
        "nproc": 1,
        "launcher": None,
        "world_size": 1,
        "backend": None,
    }
    assert two["config"]["launch"] == {
        "nproc": 2,
        "launcher": "torchrun",
        "world_size": 2,
        "backend": "gloo",
    }
    assert stamps[0]["trainer"]["world_size"] == 1
    assert stamps[1]["trainer"]["world_size"] == 2
    assert stamps[1]["trainer"]["global_step"] > 0
    assert any(line.startswith("training on 2 processes (torchrun)") for line in ddp["lines"])
    # rank 0's reports reached the job through the relay: loss per step, validation scores
    series = ok(client.get(f"/v1/jobs/{ddp['id']}/metrics"))["series"]
    assert series["loss"] and series["eval_ndcg@10"]

    # loadable and servable like any version
    embedder = get_task("embedding").load(str(two_dir))
    assert embedder is not None
    found = ok(client.post("/v1/projects/faq/search", json={"query": "lost card", "version": "v2"}))
    assert found["model_version"] == "v2" and found["items"]


def test_accelerate_launch_trains_one_job_on_two_processes_too(
    client: TestClient, store: Store, settings: Settings, tiny_model: Path
) -> None:
    seed(client, "faq", tiny_model)
    done = run_job(store, settings, "faq", 2, "accelerate")
    version = ok(client.get(f"/v1/projects/faq/versions/{done['result']['version']}"))
    assert version["config"]["launch"] == {
        "nproc": 2,
        "launcher": "accelerate",
        "world_size": 2,
        "backend": "gloo",
    }
    stamp = json.loads((Path(version["artifact_uri"]) / "fineloop.json").read_text())
    assert stamp["trainer"]["world_size"] == 2 and stamp["trainer"]["global_step"] > 0
    assert any(line.startswith("training on 2 processes (accelerate)") for line in done["lines"])


def test_a_job_asks_for_its_processes_and_bad_values_are_refused_before_it_exists(
    client: TestClient, store: Store, settings: Settings, tiny_model: Path
) -> None:
    seed(client, "faq", tiny_model)
    with pytest.raises(Invalid, match="nproc must be between 1 and 64"):
        start_training(store, "faq", nproc=0)
    with pytest.raises(Invalid, match="launcher must be one of torchrun, accelerate"):
        start_training(store, "faq", launcher="mpirun")
    assert ok(client.get("/v1/projects/faq/jobs")) == []
    queued = start_training(store, "faq", nproc=3, launcher="accelerate")
    assert queued.config["launch"] == {"nproc": 3, "launcher": "accelerate"}
    assert launch_of(settings, queued.config) == Launch(3, "accelerate")
    defaults = settings.model_copy(update={"train_nproc": 4})
    assert launch_of(defaults, {"overrides": {}}) == Launch(4, "torchrun")
    # the CLI's options queue the same request
    env = {"FINELOOP_DATA_DIR": str(settings.data_dir)}
    if settings.database_url:
        env["FINELOOP_DATABASE_URL"] = settings.database_url
    ok(client.post(f"/v1/jobs/{queued.id}/cancel"))
    refused = CliRunner().invoke(app, ["train", "faq", "--no-wait", "--nproc", "0"], env=env)
    assert refused.exit_code == 2 and "--nproc" in refused.output
    result = CliRunner().invoke(app, ["train", "faq", "--no-wait", "--nproc", "2"], env=env)
    assert result.exit_code == 0, result.output
    listed = ok(client.get("/v1/projects/faq/jobs"))
    assert [j["config"].get("launch") for j in listed if j["state"] == "queued"] == [{"nproc": 2}]
    torchrun = command(Launch(2, "torchrun"), Path("spec.json"))
    assert torchrun[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert torchrun[-3:] == ["-m", "fineloop.jobs.rank", "spec.json"]


def rank_processes(marker: str, settings: Settings) -> list[int]:
    """Pids of live processes whose command line mentions `marker` (the job's spec folder)
    under this test's data dir: another suite running beside this one has its own job 1."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().split(") ", 1)[1][:1]
        except OSError:
            continue
        if marker in cmdline and str(settings.data_dir) in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_a_rank_error_fails_the_job_with_its_message_and_cancel_stops_every_rank(
    client: TestClient, store: Store, settings: Settings, tiny_model: Path
) -> None:
    seed(client, "faq", tiny_model)
    # the ranks refuse data too small for two processes: their message becomes the job's
    job = start_training(store, "faq", {"batch_size": 64}, claimed_by="test-worker", nproc=2)
    assert execute(store, settings, job.id, StoreSink(store, job.id)) == jobs.FAILED
    failed = ok(client.get(f"/v1/jobs/{job.id}"))
    assert failed["error"].startswith(
        "2 training processes with batch_size 64 need at least 128 training examples"
    )

    # cancel while both ranks train: the job ends cancelled, no rank survives, no version
    job = start_training(store, "faq", LONG, claimed_by="test-worker", nproc=2)
    outcome: list[str] = []
    runner = threading.Thread(
        target=lambda: outcome.append(execute(store, settings, job.id, StoreSink(store, job.id)))
    )
    runner.start()
    deadline = time.monotonic() + 180
    while ok(client.get(f"/v1/jobs/{job.id}"))["progress"] <= TRAIN_STAGE[0] + 0.001:
        assert runner.is_alive() and time.monotonic() < deadline, "training never reported"
        time.sleep(0.2)
    spec = f"job{job.id}-ranks"
    assert len(rank_processes(spec, settings)) >= 3  # the launcher and its two ranks
    ok(client.post(f"/v1/jobs/{job.id}/cancel"))
    runner.join(60)
    assert outcome == [jobs.CANCELLED]
    assert rank_processes(spec, settings) == []
    assert [v["version"] for v in ok(client.get("/v1/projects/faq/versions"))] == ["v0"]


def test_killing_the_job_process_leaves_no_rank_behind(
    client: TestClient, store: Store, settings: Settings, tiny_model: Path, tmp_path: Path
) -> None:
    seed(client, "faq", tiny_model)
    job = start_training(store, "faq", LONG, claimed_by="test-worker", nproc=2)
    with (tmp_path / "job.log").open("wb") as output:
        child = subprocess.Popen(
            [sys.executable, "-m", "fineloop.jobs.run", str(job.id)],
            env=child_env(settings),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while ok(client.get(f"/v1/jobs/{job.id}"))["progress"] <= TRAIN_STAGE[0] + 0.001:
            assert child.poll() is None, (tmp_path / "job.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "training never reported"
            time.sleep(0.2)
        spec = f"job{job.id}-ranks"
        assert len(rank_processes(spec, settings)) >= 3
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 30
    while rank_processes(spec, settings):
        assert time.monotonic() < deadline, f"ranks still running: {rank_processes(spec, settings)}"
        time.sleep(0.5)
    folder = job_folder(settings, "faq", job.id)
    assert not (folder / "fineloop.json").exists()  # they stopped, they did not finish
