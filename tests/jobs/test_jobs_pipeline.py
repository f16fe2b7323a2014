"""The training pipeline in this process, on the fake task: register, gate, fail cleanly."""

from __future__ import annotations

from pathlib import Path

from jobs_fake_task import skill_of
from jobs_fixtures import MakeProject, fake_plugin, fake_project

from fineloop import artifacts
from fineloop.config import Settings
from fineloop.jobs import store as jobs
from fineloop.jobs.runner import execute
from fineloop.jobs.sink import StoreSink
from fineloop.registry import manage
from fineloop.registry.aliases import history
from fineloop.registry.versions import list_versions, resolve
from fineloop.store import Store
from fineloop.store.projects import get_project
from fineloop.store.schema import Job, ModelVersion, Snapshot

__all__ = ["fake_plugin", "fake_project"]


def train(store: Store, settings: Settings, name: str, **overrides: object) -> Job:
    with store.write() as session:
        job = jobs.create_job(
            session, get_project(session, name), "train", {"overrides": overrides}, claimed_by="t"
        )
    execute(store, settings, job.id, StoreSink(store, job.id))
    with store.read() as session:
        return jobs.get_job(session, job.id)


def versions(store: Store, name: str) -> list[ModelVersion]:
    with store.read() as session:
        return list_versions(session, get_project(session, name).id)


def alias(store: Store, name: str, which: str) -> str:
    with store.read() as session:
        return f"v{resolve(session, get_project(session, name), which).number}"


def test_a_better_candidate_is_registered_with_its_evidence_and_promoted(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project(skill=0.5)
    job = train(store, settings, name, gain=0.1)
    assert job.state == "succeeded", job.error
    assert job.progress == 1.0
    v0, v1 = versions(store, name)
    assert (v0.number, v1.number, v1.parent_id, v1.job_id) == (0, 1, v0.id, job.id)
    assert v1.snapshot_id == job.snapshot_id and v1.snapshot_id is not None
    assert skill_of(v1.artifact_uri) == 0.6
    assert Path(v1.artifact_uri) == artifacts.version_dir(settings, name, 1)
    metrics = v1.metrics
    assert metrics["primary"] == "score" and metrics["examples"] == 6
    assert metrics["candidate"]["score"] > metrics["champion"]["score"] == metrics["base"]["score"]
    interval = metrics["interval"]
    assert interval["low"] > 0 and abs(interval["mean"] - 0.1) < 1e-9
    assert v1.gate["passed"] and v1.gate["promoted"] and "above margin" in v1.gate["reason"]
    assert v1.config["train"]["gain"] == 0.1
    assert alias(store, name, "champion") == alias(store, name, "challenger") == "v1"
    assert job.result["version"] == "v1" and job.result["promoted"] is True
    assert job.version_id == v1.id
    with store.read() as session:
        snapshot = session.get(Snapshot, v1.snapshot_id)
        moves = [(c.alias, c.reason) for c in history(session, v1.project_id, "champion")]
        series = jobs.metric_series(session, job.id)
    assert snapshot is not None and snapshot.splits == {"train": 6, "validation": 6, "test": 6}
    assert [m[1] for m in moves] == ["base model", v1.gate["reason"]]
    assert [p["value"] for p in series["loss"]] == [1.0, 0.5, 1 / 3, 0.25]
    # the next run starts from the champion; the base model is still measured
    job2 = train(store, settings, name, gain=0.1)
    v2 = versions(store, name)[-1]
    assert job2.state == "succeeded" and v2.parent_id == v1.id
    assert abs(skill_of(v2.artifact_uri) - 0.7) < 1e-9
    assert v2.metrics["champion_version"] == "v1" and v2.metrics["base_version"] == "v0"
    assert v2.metrics["champion"]["score"] > v2.metrics["base"]["score"]
    assert not list((artifacts.root(settings) / name / "tmp").iterdir())  # scratch cleared


def test_a_candidate_that_is_not_better_stays_challenger_with_the_reason(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project()
    job = train(store, settings, name, gain=0.0)
    assert job.state == "succeeded"
    v1 = versions(store, name)[-1]
    assert not v1.gate["passed"] and not v1.gate["promoted"]
    assert "not above margin" in v1.gate["reason"] and "champion stays" in v1.gate["reason"]
    assert alias(store, name, "champion") == "v0"
    assert alias(store, name, "challenger") == "v1"
    assert job.message == "v1 registered; champion stays v0"


def test_margin_and_auto_promote_come_from_the_training_policy(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    strict = fake_project("strict", gate_margin=0.2)
    assert train(store, settings, strict, gain=0.1).result["promoted"] is False
    assert versions(store, strict)[-1].gate["margin"] == 0.2
    manual = fake_project("manual", auto_promote=False)
    job = train(store, settings, manual, gain=0.1)
    assert job.result["gate"]["passed"] is True and job.result["promoted"] is False
    assert alias(store, manual, "champion") == "v0"


def test_too_few_examples_fail_the_job_with_the_builders_message(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project(examples=4)
    job = train(store, settings, name)
    assert job.state == "failed"
    assert job.error == "training needs at least 6 labelled examples, has 4"
    assert [v.number for v in versions(store, name)] == [0]
    assert alias(store, name, "champion") == "v0"


def test_a_crashing_trainer_registers_nothing_and_leaves_no_folders(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project()
    job = train(store, settings, name, fail=True)
    assert job.state == "failed"
    assert job.error == "RuntimeError: the fake trainer broke on purpose"
    with store.read() as session:
        logs = [e.message for e in jobs.events(session, job.id) if e.kind == "log"]
    assert any("Traceback" in line for line in logs)
    assert [v.number for v in versions(store, name)] == [0]
    assert not list((artifacts.root(settings) / name / "tmp").iterdir())
    assert not artifacts.version_dir(settings, name, 1).exists()


def test_a_folder_left_by_a_killed_run_is_replaced_not_reused(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project(skill=0.5)
    stale = artifacts.version_dir(settings, name, 1)
    stale.mkdir(parents=True)
    (stale / "model.json").write_text('{"skill": 0.01}')
    assert train(store, settings, name, gain=0.2).state == "succeeded"
    assert abs(skill_of(versions(store, name)[-1].artifact_uri) - 0.7) < 1e-9


def test_a_job_cancelled_before_it_runs_a_step_registers_nothing(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project()
    with store.write() as session:
        job = jobs.create_job(session, get_project(session, name), "train", {}, claimed_by="t")
        jobs.request_cancel(session, job.id)
    assert execute(store, settings, job.id, StoreSink(store, job.id)) == "cancelled"
    assert [v.number for v in versions(store, name)] == [0]


def test_bad_overrides_fail_the_job_naming_the_field(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project()
    job = train(store, settings, name, gian=0.1)
    assert job.state == "failed" and "gian" in (job.error or "")


class PromotesDuringTraining(StoreSink):
    """A sink through which, mid-training, someone rolls the champion back by hand."""

    def __init__(self, store: Store, job_id: int, project: str) -> None:
        super().__init__(store, job_id)
        self.project, self.done = project, False

    def progress(self, fraction: float, message: str = "") -> None:
        if message.startswith("step") and not self.done:
            self.done = True
            with self.store.write() as session:
                manage.roll_back(session, get_project(session, self.project), reason="by hand")
        super().progress(fraction, message)


def test_a_champion_moved_during_training_is_not_overwritten(
    store: Store, settings: Settings, fake_project: MakeProject
) -> None:
    name = fake_project()
    assert train(store, settings, name, gain=0.1).result["promoted"]  # v1 is champion
    with store.write() as session:
        job = jobs.create_job(session, get_project(session, name), "train", {}, claimed_by="t")
    assert execute(store, settings, job.id, PromotesDuringTraining(store, job.id, name)) == (
        "succeeded"
    )
    v2 = versions(store, name)[-1]
    assert v2.gate["passed"] and not v2.gate["promoted"]  # better than v1, but v1 left
    assert "champion changed during training" in v2.gate["note"]
    assert alias(store, name, "champion") == "v0"  # the manual rollback stands
    assert alias(store, name, "challenger") == "v2"
