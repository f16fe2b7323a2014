"""Refit after the gate (`training_policy.refit`): a candidate that passed is trained once
more on train + validation and registered instead, unless it tests worse; off, nothing
changes; a family without the capability registers the candidate and says why.

The loop's decisions run on the fake task (tests/jobs/jobs_fake_task.py: its refit's skill
is set by `refit_gain`, so which model wins follows from the numbers); the embedding
family's refit runs on the tiny model, alone and through a whole job.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from jobs_fake_task import skill_of
from jobs_fixtures import MakeProject, fake_plugin, fake_project
from test_jobs_pipeline import alias, train, versions
from typer.testing import CliRunner

from fineloop import artifacts
from fineloop.cli import app
from fineloop.config import Settings
from fineloop.jobs import store as jobs
from fineloop.jobs.runner import execute
from fineloop.jobs.search_space import start_search
from fineloop.jobs.sink import StoreSink
from fineloop.jobs.train import REFIT_EVALUATE
from fineloop.store import Store
from fineloop.store.projects import get_project
from fineloop.store.schema import Job
from fineloop.tasks.base import NullSink
from fineloop.tasks.embedding import EmbeddingTask
from fineloop.tasks.embedding.evaluate import read_pairs
from fineloop.tasks.embedding.refit import chosen_batch, kept_share
from handmade_snapshot import ITEMS, QUERIES, write_snapshot

__all__ = ["fake_plugin", "fake_project"]

TASK = EmbeddingTask()
TINY = {"batch_size": 8, "learning_rate": 1e-3, "warmup_ratio": 0.0, "precision": "fp32"}


def logs(store: Store, job: Job) -> list[str]:
    with store.read() as session:
        return [event.message for event in jobs.events(session, job.id)]


def metric_names(store: Store, job: Job) -> set[str]:
    with store.read() as session:
        return set(jobs.metric_series(session, job.id))


class Watched(StoreSink):
    """The job's own sink, keeping every progress fraction reported to it."""

    def __init__(self, store: Store, job_id: int) -> None:
        super().__init__(store, job_id)
        self.seen: list[float] = []

    def progress(self, fraction: float, message: str = "") -> None:
        self.seen.append(fraction)
        super().progress(fraction, message)


def train_watched(
    store: Store, settings: Settings, name: str, **overrides: object
) -> tuple[Job, list[float]]:
    with store.write() as session:
        job = jobs.create_job(
            session, get_project(session, name), "train", {"overrides": overrides}, claimed_by="t"
        )
    sink = Watched(store, job.id)
    execute(store, settings, job.id, sink)
    with store.read() as session:
        return jobs.get_job(session, job.id), sink.seen


# --- the loop, on the fake task -------------------------------------------------------------


def test_refit_off_is_the_pipeline_as_before(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project(skill=0.5)  # refit is off by default
    job = train(store, settings, name, gain=0.1, refit_gain=0.3)
    assert job.state == "succeeded", job.error
    v1 = versions(store, name)[-1]
    assert abs(skill_of(v1.artifact_uri) - 0.6) < 1e-9  # the candidate itself
    assert "refit" not in v1.metrics and "refit" not in job.result and "refit" not in v1.config
    assert not any("refit" in line for line in logs(store, job))
    assert "phase_seconds/refit" not in metric_names(store, job)


def test_a_refit_that_tests_no_worse_is_registered_with_both_models_metrics(
    store: Store, settings: Settings, fake_project: MakeProject, client: TestClient
) -> None:
    name = fake_project(skill=0.5, refit=True)
    job, progress = train_watched(store, settings, name, gain=0.1, refit_gain=0.2)
    assert job.state == "succeeded", job.error
    v1 = versions(store, name)[-1]
    assert abs(skill_of(v1.artifact_uri) - 0.7) < 1e-9  # the refit's model serves
    assert alias(store, name, "champion") == "v1" and job.result["promoted"] is True
    record = v1.metrics["refit"]
    assert record["of"] == "candidate" and record["registered"] == "refit"
    assert record["train_examples"] == 12  # train 6 + validation 6; test stays held out
    assert record["epochs"] == 1
    gated, refit = record["candidate"]["score"], record["refit"]["score"]
    assert abs(refit - gated - 0.1) < 1e-9 and record["candidate_score"] == gated
    assert record["refit_score"] == refit
    # the version's scores are the served model's; the gate's interval is the candidate's
    assert v1.metrics["candidate"]["score"] == refit
    assert abs(v1.metrics["interval"]["mean"] - 0.1) < 1e-9
    assert v1.gate["passed"] is True
    assert v1.config["refit"] == {"epochs": 1, "train_examples": 12}
    assert v1.config["train"]["refit_gain"] == 0.2
    assert job.result["refit"] == record  # shown on the job's page with the result
    assert "phase_seconds/refit" in metric_names(store, job)
    assert any("the refit is registered" in line for line in logs(store, job))
    assert progress == sorted(progress)  # the refit's stage comes after the evaluation's
    assert any(REFIT_EVALUATE[0] < p < REFIT_EVALUATE[1] for p in progress)
    assert not list((artifacts.root(settings) / name / "tmp").iterdir())  # scratch cleared
    page = client.get(f"/jobs/{job.id}").text  # the dashboard's job page says so
    assert '<span id="job-refit">Refitted on train + validation (12 examples, 1 epoch).' in page


@pytest.mark.parametrize("task", ["fake", "fake-loss"])
def test_a_refit_that_tests_worse_than_the_candidate_is_dropped_with_the_reason(
    store: Store, settings: Settings, fake_project: MakeProject, task: str, client: TestClient
) -> None:
    name = fake_project(skill=0.5, refit=True, task=task)
    job = train(store, settings, name, gain=0.1, refit_gain=0.05)
    assert job.state == "succeeded", job.error
    v1 = versions(store, name)[-1]
    assert abs(skill_of(v1.artifact_uri) - 0.6) < 1e-9  # the gated candidate
    record = v1.metrics["refit"]
    primary = v1.metrics["primary"]
    assert record["registered"] == "candidate" and "is worse than" in record["reason"]
    assert v1.metrics["candidate"] == record["candidate"] != record["refit"]
    assert record[f"refit_{primary}"] == record["refit"][primary]
    assert "refit" not in v1.config  # the artifact is the candidate, trained as configured
    assert alias(store, name, "champion") == "v1"  # the candidate passed: it is promoted
    assert "Not refitted: the refit&#39;s test" in client.get(f"/jobs/{job.id}").text


def test_the_cli_in_the_foreground_says_what_the_refit_did(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project(skill=0.5, refit=True)
    env = {"FINELOOP_DATA_DIR": str(settings.data_dir), "COLUMNS": "200"}
    if settings.database_url:
        env["FINELOOP_DATABASE_URL"] = settings.database_url
    sets = ["--set", "gain=0.1", "--set", "refit_gain=0.2"]
    result = CliRunner().invoke(app, ["train", name, *sets], env=env)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "refit: the refit's test score 0." in out and "the refit is registered" in out
    assert abs(skill_of(versions(store, name)[-1].artifact_uri) - 0.7) < 1e-9


def test_a_search_refits_its_best_trial_with_the_values_it_chose(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project(skill=0.5, refit=True)
    search = {"space": {"gain": {"type": "float", "low": 0.1, "high": 0.2}}, "n_trials": 2}
    made = start_search(store, name, search | {"train": {"refit_gain": 0.3}}, claimed_by="t")
    execute(store, settings, made.id, StoreSink(store, made.id))
    with store.read() as session:
        job = jobs.get_job(session, made.id)
    assert job.state == "succeeded", job.error
    v1 = versions(store, name)[-1]
    assert abs(skill_of(v1.artifact_uri) - 0.8) < 1e-9  # the refit, not the best trial
    assert v1.metrics["refit"]["registered"] == "refit" and "search" in job.result
    assert v1.config["search"]["params"]["gain"] >= 0.1 and v1.config["refit"]["epochs"] == 1


def test_no_refit_runs_when_the_gate_fails(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project(skill=0.5, refit=True)
    job = train(store, settings, name, gain=0.0, refit_gain=0.3)
    assert job.state == "succeeded", job.error
    v1 = versions(store, name)[-1]
    assert not v1.gate["passed"] and abs(skill_of(v1.artifact_uri) - 0.5) < 1e-9
    assert "refit" not in v1.metrics and "refit" not in job.result
    assert "refit: skipped, the candidate did not pass the gate" in logs(store, job)
    assert "phase_seconds/refit" not in metric_names(store, job)
    assert alias(store, name, "champion") == "v0"


def test_a_family_without_the_capability_registers_the_candidate_and_says_why(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project(skill=0.5, refit=True)
    job = train(store, settings, name, gain=0.1)  # refit_gain None: TaskDefaults.refit
    assert job.state == "succeeded", job.error
    v1 = versions(store, name)[-1]
    assert abs(skill_of(v1.artifact_uri) - 0.6) < 1e-9
    record = v1.metrics["refit"]
    assert record["registered"] == "candidate"
    assert record["reason"] == "the fake family made no refit; the gated candidate is registered"
    assert "refit: the fake family cannot refit" in logs(store, job)
    assert alias(store, name, "champion") == "v1"


def test_a_crash_during_the_refit_registers_nothing_and_the_champion_serves(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project(skill=0.5, refit=True)
    job = train(store, settings, name, gain=0.1, refit_gain=0.2, refit_fail=True)
    assert job.state == "failed" and "the fake refit broke on purpose" in (job.error or "")
    assert [v.number for v in versions(store, name)] == [0]
    assert alias(store, name, "champion") == "v0"
    assert not artifacts.version_dir(settings, name, 1).exists()


class CancelDuringRefit(StoreSink):
    """Cancels the job (as a user would) when the refit reports its end."""

    def __init__(self, store: Store, job_id: int) -> None:
        super().__init__(store, job_id)
        self.asked = False

    def progress(self, fraction: float, message: str = "") -> None:
        super().progress(fraction, message)
        if message == "refitted" and not self.asked:
            with self.store.write() as session:
                jobs.request_cancel(session, self.job_id)
            self.asked = True

    def cancelled(self) -> bool:
        return self.asked or super().cancelled()


def test_a_cancel_during_the_refit_registers_nothing(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project(skill=0.5, refit=True)
    overrides = {"gain": 0.1, "refit_gain": 0.2}
    with store.write() as session:
        made = jobs.create_job(
            session, get_project(session, name), "train", {"overrides": overrides}, claimed_by="t"
        )
    assert execute(store, settings, made.id, CancelDuringRefit(store, made.id)) == "cancelled"
    assert [v.number for v in versions(store, name)] == [0]
    assert alias(store, name, "champion") == "v0"
    assert not list((artifacts.root(settings) / name / "tmp").iterdir())  # refit folder too


# --- the embedding family -------------------------------------------------------------------


def test_the_kept_share_is_where_the_best_checkpoint_was_in_the_schedule() -> None:
    history = [
        {"loss": 1.0, "step": 2, "epoch": 0.5},
        {"eval_validation_cosine_ndcg@10": 0.4, "step": 4, "epoch": 1.0},
        {"eval_validation_cosine_ndcg@10": 0.6, "step": 8, "epoch": 2.0},
        {"eval_validation_cosine_ndcg@10": 0.5, "step": 12, "epoch": 3.0},
    ]
    state = {"best_step": 8, "max_steps": 12, "log_history": history}
    assert kept_share(state) == {"best_step": 8, "best_epoch": 2.0, "share": 8 / 12}
    assert kept_share(state | {"best_step": None}) is None
    assert kept_share(state | {"max_steps": 0}) is None
    assert kept_share({}) is None


def test_the_refit_keeps_the_batch_size_auto_chose() -> None:
    auto = {"requested": "auto", "batch_size": 64, "loss": "cached_mnrl"}
    assert chosen_batch(auto | {"cached_mini_batch_size": 16}) == {
        "batch_size": 64,
        "loss": "cached_mnrl",
        "cached_mini_batch_size": 16,
    }
    assert chosen_batch(auto | {"cached_mini_batch_size": None}) == {
        "batch_size": 64,
        "loss": "cached_mnrl",
    }
    assert chosen_batch({"requested": 32, "batch_size": 32}) == {}
    assert chosen_batch({}) == {}


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_snapshot(tmp_path_factory.mktemp("snapshot"))


def test_the_embedding_refit_trains_on_train_and_validation_to_the_kept_epoch(
    snapshot: Path, _tiny_model_master: Path, tmp_path: Path
) -> None:
    base = tmp_path / "base"
    shutil.copytree(_tiny_model_master, base)
    config = TASK.train_config(TINY | {"epochs": 3, "logging_steps": 1})
    trained = TASK.train(snapshot, str(base), config, tmp_path / "candidate", NullSink())
    first = json.loads((trained / "fineloop.json").read_text())["trainer"]
    best_epoch = next(
        e["epoch"]
        for e in first["log_history"]
        if e.get("step") == first["best_step"] and "eval_validation_cosine_ndcg@10" in e
    )

    refitted = TASK.refit(snapshot, str(base), config, trained, tmp_path / "refit", NullSink())
    assert refitted is not None
    pairs = read_pairs(snapshot)
    summary = refitted.summary
    assert summary["train_examples"] == len(pairs["train"]) + len(pairs["validation"])
    assert summary["validation_examples"] == len(pairs["validation"]) > 0
    assert summary["best_step"] == first["best_step"] and summary["best_epoch"] == best_epoch
    assert summary["share"] == first["best_step"] / first["max_steps"]
    # the same schedule (3 epochs over the larger split), stopped where the best one was
    assert summary["epochs"] == round(best_epoch)
    assert summary["steps"] == round(summary["share"] * summary["of_steps"])
    assert summary["of_steps"] > first["max_steps"]  # more rows, more steps per epoch
    stamp = json.loads((refitted.folder / "fineloop.json").read_text())
    assert stamp["refit"] == summary
    assert stamp["snapshot_id"] == "handmade0001"  # the real snapshot, not its merged copy
    assert stamp["config"]["early_stopping_patience"] is None
    assert stamp["config"]["epochs"] == 3
    history = stamp["trainer"]["log_history"]
    assert not any(k.startswith("eval_") for entry in history for k in entry)  # no validation
    assert TASK.evaluate(str(refitted.folder), snapshot, "test").metrics["ndcg@10"] >= 0
    assert not (tmp_path / "refit-data").exists()  # the merged copy is gone


def test_an_embedding_refit_capped_by_max_steps_grows_the_cap_with_the_split(
    snapshot: Path, _tiny_model_master: Path, tmp_path: Path
) -> None:
    config = TASK.train_config(TINY | {"max_steps": 6, "eval_steps": 2})
    trained = TASK.train(snapshot, str(_tiny_model_master), config, tmp_path / "c", NullSink())
    first = json.loads((trained / "fineloop.json").read_text())["trainer"]
    refitted = TASK.refit(
        snapshot, str(_tiny_model_master), config, trained, tmp_path / "r", NullSink()
    )
    assert refitted is not None
    pairs = read_pairs(snapshot)
    grown = (len(pairs["train"]) + len(pairs["validation"])) / len(pairs["train"])
    summary = refitted.summary
    assert summary["max_steps"] == summary["of_steps"] == round(6 * grown)
    assert summary["share"] == first["best_step"] / 6
    assert summary["steps"] == max(1, round(summary["share"] * summary["max_steps"]))


def test_an_embedding_job_with_refit_on_registers_the_refit_or_says_why_not(
    client: TestClient, store: Store, settings: Settings, tiny_model: Path
) -> None:
    """Through the API: `refit` is part of the training policy; a margin of -1 lets any
    candidate pass, so the refit always runs."""
    policy = {"train": TINY | {"epochs": 2}, "refit": True, "gate_margin": -1.0}
    body = {"name": "faq", "task": "embedding", "base_model": str(tiny_model)}
    made = client.post("/v1/projects", json=body | {"training_policy": policy})
    assert made.status_code == 201, made.text
    assert made.json()["training_policy"]["refit"] is True
    items = {"items": [{"id": k, "text": v} for k, v in ITEMS.items()]}
    assert client.put("/v1/projects/faq/items", json=items).status_code == 200
    labels = [
        {"kind": "label", "input": q, "items": [item]} for item, qs in QUERIES.items() for q in qs
    ]
    sent = client.post("/v1/projects/faq/feedback/batch", json={"events": labels})
    assert sent.status_code == 201, sent.text
    job = train(store, settings, "faq")
    assert job.state == "succeeded", job.error
    version = client.get("/v1/projects/faq/versions/v1").json()
    snapshot = client.get(f"/v1/projects/faq/snapshots/{version['snapshot_id']}").json()
    record = version["metrics"]["refit"]
    assert (
        record["train_examples"] == snapshot["splits"]["train"] + snapshot["splits"]["validation"]
    )
    assert {"candidate", "refit", "candidate_ndcg@10", "refit_ndcg@10", "epochs"} <= set(record)
    served = json.loads((Path(version["artifact_uri"]) / "fineloop.json").read_text())
    if record["registered"] == "refit":
        assert version["metrics"]["candidate"] == record["refit"]
        assert served["refit"]["train_examples"] == record["train_examples"]
        assert version["config"]["refit"]["steps"] == record["steps"]
    else:
        assert record["refit_ndcg@10"] < record["candidate_ndcg@10"]
        assert "refit" not in served and version["metrics"]["candidate"] == record["candidate"]
    assert client.get(f"/v1/jobs/{job.id}").json()["result"]["refit"] == record
    assert job.progress == 1.0 and REFIT_EVALUATE[1] < 1.0
