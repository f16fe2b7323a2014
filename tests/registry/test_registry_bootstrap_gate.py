"""v0 bootstrap (idempotent, also concurrently) and the gate's decisions with reasons."""

from __future__ import annotations

import threading

import pytest

from fineloop.config import Settings
from fineloop.jobs.training_steps import Comparison, gate_decision
from fineloop.policies import TrainingPolicy
from fineloop.registry.aliases import history
from fineloop.registry.bootstrap import ensure_base_version
from fineloop.registry.gate import decide, paired_bootstrap
from fineloop.registry.versions import list_versions, resolve
from fineloop.schemas import ProjectCreate
from fineloop.store import Store
from fineloop.store.projects import create_project, get_project
from fineloop.tasks.base import Evaluation


class Default:
    def default_base_model(self) -> str:
        return "/models/default"


def test_v0_is_the_base_model_and_champion_created_once_even_by_racing_callers(
    settings: Settings, store: Store
) -> None:
    with store.write() as session:
        create_project(session, ProjectCreate(name="p", task="embedding", base_model="/m/base"))
        create_project(session, ProjectCreate(name="q", task="embedding"))
    stores = [store, Store.open(settings, migrate_schema=False)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def bootstrap(through: Store) -> None:
        try:
            for name in ("p", "q"):
                barrier.wait()
                with through.write() as session:
                    ensure_base_version(session, get_project(session, name), Default())
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=bootstrap, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stores[1].close()
    assert errors == []
    with store.read() as session:
        for name, base in (("p", "/m/base"), ("q", "/models/default")):
            project = get_project(session, name)
            versions = list_versions(session, project.id)
            assert [(v.number, v.artifact_uri, v.base_model) for v in versions] == [(0, base, base)]
            assert resolve(session, project, "champion").id == versions[0].id
            assert [c.reason for c in history(session, project.id)] == ["base model"]


def evaluation(scores: list[float]) -> Evaluation:
    return Evaluation({"ndcg@10": sum(scores) / max(1, len(scores))}, "ndcg@10", scores)


def comparison(candidate: list[float], champion: list[float]) -> Comparison:
    return Comparison(
        "ndcg@10", evaluation(champion), evaluation(champion), evaluation(candidate), "v0", "v0"
    )


def test_the_gate_passes_a_sure_improvement_and_says_why() -> None:
    champion = [0.2, 0.5, 0.4, 0.6, 0.3, 0.5]
    better = [s + 0.2 for s in champion]
    decision = gate_decision(comparison(better, champion), TrainingPolicy(bootstrap_samples=200))
    assert decision.passed and decision.interval is not None
    assert decision.interval.low == pytest.approx(0.2) and decision.interval.mean == pytest.approx(
        0.2
    )
    assert decision.reason.startswith("ndcg@10: candidate - champion = +0.2000")
    assert "lower bound above margin +0.0000" in decision.reason
    strict = gate_decision(comparison(better, champion), TrainingPolicy(gate_margin=0.25))
    assert not strict.passed and "not above margin +0.2500" in strict.reason


def test_the_gate_fails_a_noisy_or_unmeasured_candidate_and_says_why() -> None:
    champion = [0.2, 0.5, 0.4, 0.6, 0.3, 0.5]
    mixed = [0.6, 0.1, 0.8, 0.2, 0.7, 0.1]  # better on some queries, worse on others
    interval = paired_bootstrap(mixed, champion, samples=500, seed=1)
    assert interval.low < 0 < interval.high
    assert not decide("ndcg@10", interval, 0.0).passed
    noisy = gate_decision(comparison(mixed, champion), TrainingPolicy())
    assert not noisy.passed and "so the champion stays" in noisy.reason
    empty = gate_decision(comparison([], []), TrainingPolicy())
    assert not empty.passed and empty.interval is None
    assert "no paired held-out scores" in empty.reason
