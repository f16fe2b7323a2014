"""Held-out evaluation: the library's IR metrics, nDCG@10 per query in a fixed order, and
the three-way comparison the promotion gate decides on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fineloop.errors import Invalid, NotFound
from fineloop.tasks.base import NullSink
from fineloop.tasks.embedding import EmbeddingTask
from fineloop.tasks.embedding.evaluate import METRICS, compare, evaluate
from handmade_snapshot import ITEMS, QUERIES, write_snapshot

TASK = EmbeddingTask()
EXACT = ITEMS["i05"]  # a test query that is its item's text: cosine 1, found first


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_snapshot(tmp_path_factory.mktemp("snapshot"), extra={"test": [(EXACT, "i05")]})


@pytest.fixture(scope="module")
def base(_tiny_model_master: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    copy = tmp_path_factory.mktemp("base") / "model"
    shutil.copytree(_tiny_model_master, copy)
    return str(copy)


@pytest.fixture(scope="module")
def better(base: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A deliberately better model: trained on every split, test queries included."""
    every = {"train": [(q, item) for item, qs in QUERIES.items() for q in qs]}
    leaky = write_snapshot(tmp_path_factory.mktemp("leaky"), "leaky", extra=every)
    config = TASK.train_config(
        {"epochs": 6, "batch_size": 8, "learning_rate": 1e-3, "precision": "fp32"}
    )
    out = TASK.train(leaky, base, config, tmp_path_factory.mktemp("better") / "m", NullSink())
    return str(out)


def test_evaluate_returns_the_five_metrics_and_ndcg_per_query(snapshot: Path, base: str) -> None:
    result = TASK.evaluate(base, snapshot, "test")
    assert set(result.metrics) == set(METRICS) and result.primary == "ndcg@10"
    assert all(0.0 <= value <= 1.0 for value in result.metrics.values())
    queries = sorted({q[3] for q in QUERIES.values()} | {EXACT})
    assert len(result.per_example) == len(queries) == 19
    mean = sum(result.per_example) / len(result.per_example)
    assert mean == pytest.approx(result.metrics["ndcg@10"], abs=1e-6)
    # Fixed order: sorted query texts. The exact-text query ranks its item first.
    assert result.per_example[queries.index(EXACT)] == pytest.approx(1.0)
    assert result.metrics["accuracy@1"] <= result.metrics["accuracy@5"]
    assert TASK.evaluate(base, snapshot, "test").per_example == result.per_example


def test_validation_split_and_bad_requests(snapshot: Path, base: str, tmp_path: Path) -> None:
    result = evaluate(base, snapshot, "validation")
    assert len(result.per_example) == len(QUERIES)
    with pytest.raises(Invalid, match="unknown split"):
        evaluate(base, snapshot, "holdout")
    with pytest.raises(NotFound):
        evaluate(base, tmp_path / "nowhere", "test")


def test_compare_puts_a_better_candidate_above_the_champion(
    snapshot: Path, base: str, better: str
) -> None:
    result = compare(base, base, better, snapshot, samples=500, seed=3)
    assert result.base.metrics == result.champion.metrics  # the base is the champion: once
    gain = result.candidate.metrics["ndcg@10"] - result.champion.metrics["ndcg@10"]
    assert gain > 0.05
    assert result.interval.mean == pytest.approx(gain, abs=1e-9)
    assert 0 < result.interval.low <= result.interval.mean <= result.interval.high
    backwards = compare(base, better, base, snapshot, samples=500, seed=3)
    assert backwards.interval.high < 0
    assert result.as_dict()["candidate"] == result.candidate.metrics
