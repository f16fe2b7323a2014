"""A search on the real embedding task and the tiny model, over HTTP with the server's
worker: trials as child jobs with their metric series, the study in the same database, the
best trial registered; then, in this process, a pruned trial really stops training at the
evaluation that judged it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from test_jobs_embedding_e2e import seed_project

from conftest import LiveServer
from fineloop.config import Settings
from fineloop.jobs import store as jobs
from fineloop.jobs.runner import execute
from fineloop.jobs.search_space import start_search
from fineloop.jobs.sink import StoreSink
from fineloop.registry.versions import list_versions
from fineloop.sdk import Client
from fineloop.store import Store
from fineloop.store.schema import Job

# Only the learning rate is searched (the other default keys are dropped): two short trials.
SPACE = {
    "learning_rate": {"type": "float", "low": 5e-4, "high": 2e-3, "log": True},
    "epochs": None,
    "batch_size": None,
    "warmup_ratio": None,
    "hard_negatives": None,
    "loss": None,
}


def trials(client: Client, search_id: int) -> list[dict[str, Any]]:
    rows = [j for j in client.jobs("faq", limit=100) if j["parent_id"] == search_id]
    return sorted(rows, key=lambda j: int(j["id"]))


def test_search_over_http_registers_the_best_trial_and_prunes_by_stopping_training(
    settings: Settings, tiny_model: Path
) -> None:
    live = LiveServer(settings)
    try:
        with Client(live.url) as client:
            seed_project(client, "faq", tiny_model)
            queued = client.tune("faq", n_trials=2, space=SPACE, train={"epochs": 1})
            assert (queued["kind"], queued["state"]) == ("search", "queued")
            job = client.wait(queued["id"], timeout=300, poll=0.5)
            assert job["state"] == "succeeded", job["error"]
            summary = job["result"]["search"]
            study = f"fineloop-faq-job{job['id']}"
            assert summary["study"] == study and summary["trials"]["complete"] == 2

            rows = trials(client, job["id"])
            assert [(r["kind"], r["state"]) for r in rows] == [("trial", "succeeded")] * 2
            for row in rows:
                lr = row["config"]["params"]["learning_rate"]
                assert 5e-4 <= lr <= 2e-3 and row["config"]["train"]["epochs"] == 1
                series = client.job_metrics(row["id"])
                assert series["loss"] and len(series["eval_ndcg@10"]) == 2  # base + 1 epoch
                assert 0 <= row["result"]["value"] <= 1
            best = max(rows, key=lambda r: r["result"]["value"])
            assert summary["best_trial_job"] == best["id"]

            version = client.version("faq", job["version"])
            assert job["version"] == "v1" and version["config"]["search"]["study"] == study
            chosen = best["config"]["params"]
            assert version["config"]["search"]["params"] == chosen
            assert version["config"]["train"]["learning_rate"] == chosen["learning_rate"]
            assert set(version["metrics"]["candidate"]) >= {"ndcg@10", "mrr@10"}
            assert version["gate"]["reason"].startswith("ndcg@10: candidate - champion")

    finally:
        live.stop()

    # in this process now (the server is gone): nDCG never reaches 1.01, so the only trial
    # is pruned at its first evaluation, and its training stops right there
    store = Store.open(settings)
    try:
        pruner = {"kind": "threshold", "lower": 1.01}
        body = {"space": SPACE, "n_trials": 1, "train": {"epochs": 2}, "pruner": pruner}
        doomed = start_search(store, "faq", body, claimed_by="test")
        assert execute(store, settings, doomed.id, StoreSink(store, doomed.id)) == "failed"
        with store.read() as session:
            failed = jobs.get_job(session, doomed.id)
            (row,) = session.scalars(select(Job).where(Job.parent_id == doomed.id)).all()
            series = jobs.metric_series(session, row.id)
            names = session.execute(text("SELECT study_name FROM studies ORDER BY study_id"))
            studies = names.scalars().all()
            versions = [v.number for v in list_versions(session, failed.project_id)]
        assert (failed.error or "").startswith("no trial finished (1 pruned, 0 failed)")
        assert row.state == "cancelled" and row.result["state"] == "pruned"
        assert row.message.startswith("pruned at evaluation 1: validation ndcg@10")
        evaluated_at = series["eval_ndcg@10"][-1]["step"]
        assert [p["step"] for p in series["eval_ndcg@10"]] == [0, evaluated_at]
        assert max(p["step"] for p in series["loss"]) <= evaluated_at  # it stopped there
        assert versions == [0, 1]
        assert studies == [study, f"fineloop-faq-job{doomed.id}"]  # beside fineloop's tables
    finally:
        store.close()
