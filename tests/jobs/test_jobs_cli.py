"""`fineloop train`, `fineloop models ...` and `fineloop jobs ...` on the fake task."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from jobs_fixtures import MakeProject, fake_plugin, fake_project
from typer.testing import CliRunner, Result

from fineloop.cli import app
from fineloop.config import Settings

__all__ = ["fake_plugin", "fake_project"]
Run = Callable[..., Result]


@pytest.fixture
def run(settings: Settings) -> Run:
    env = {"FINELOOP_DATA_DIR": str(settings.data_dir)}
    if settings.database_url:
        env["FINELOOP_DATABASE_URL"] = settings.database_url
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), env=env)


def table(result: Result) -> list[list[str]]:
    """The body rows of the rich table a command printed, as lists of cell texts."""
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("│")]
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in lines]


def said(result: Result) -> str:
    return " ".join(result.output.split())


def test_train_in_the_foreground_prints_metrics_and_the_gate_decision(
    run: Run, fake_project: MakeProject
) -> None:
    name = fake_project()
    result = run("train", name, "--set", "gain=0.1")
    assert result.exit_code == 0, result.output
    out = said(result)
    assert "gate passed: score: candidate - champion = +0.1000" in out
    assert "v1 registered and promoted to champion (champion: v1)" in out
    assert "base (v0)" in out and "candidate (v1)" in out
    second = run("train", name, "--set", "gain=0", "--set", "steps=2")
    assert second.exit_code == 0, second.output
    assert "gate not passed" in said(second) and "champion stays v1" in said(second)


def test_train_failures_exit_1_with_the_error(run: Run, fake_project: MakeProject) -> None:
    broken = run("train", fake_project(), "--set", "fail=true")
    assert broken.exit_code == 1
    assert "failed: RuntimeError: the fake trainer broke on purpose" in said(broken)
    few = run("train", fake_project("few", examples=2))
    assert few.exit_code == 1
    assert "training needs at least 6 labelled examples, has 2" in said(few)
    bad = run("train", "few", "--set", "nonsense")
    assert bad.exit_code == 2 and "use key=value" in said(bad)


def test_models_and_jobs_commands(run: Run, fake_project: MakeProject) -> None:
    name = fake_project()
    assert run("train", name, "--set", "gain=0.1").exit_code == 0
    assert run("train", name, "--set", "gain=-0.1").exit_code == 0
    listed = {row[0]: row for row in table(run("models", "list", name))}
    assert listed["v0"][1:4] == ["", "-", "-"]
    assert listed["v1"][1:5] == ["champion", "score 0.6032", "passed", "v0"]
    assert listed["v2"][1:5] == ["challenger", "score 0.5032", "failed", "v1"]
    shown = json.loads(run("models", "show", name, "champion").stdout)
    assert shown["version"] == "v1" and shown["gate"]["passed"] is True
    compared = said(run("models", "compare", name, "v1", "v2"))
    assert "score *" in compared and "-0.1000" in compared
    assert "measured on one split by v2" in compared
    refused = run("models", "promote", name, "v2")
    assert refused.exit_code == 1 and "did not pass the promotion gate" in said(refused)
    forced = run("models", "promote", name, "v2", "--force", "--reason", "try")
    assert forced.exit_code == 0
    assert "champion: v1 -> v2 (forced past the gate: try)" in said(forced)
    back = run("models", "rollback", name)
    assert back.exit_code == 0 and "champion: v2 -> v1" in said(back)
    missing = run("models", "show", name, "v9")
    assert missing.exit_code == 1 and "no version or alias 'v9'" in said(missing)
    jobs = {row[0]: row for row in table(run("jobs", "list", name))}
    assert jobs["2"][2:5] == ["succeeded", "100%", "v2"]
    queued = run("train", name, "--no-wait")
    assert queued.exit_code == 0 and "queued job 3" in said(queued)
    assert json.loads(run("jobs", "show", "3", "--events", "0").stdout)["state"] == "queued"
    assert "queued" in said(run("jobs", "show", "3"))
    cancelled = run("jobs", "cancel", "3")
    assert "job 3: cancelled" in said(cancelled)
    assert run("jobs", "cancel", "99").exit_code == 1
