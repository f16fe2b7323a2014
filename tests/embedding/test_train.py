"""Training an embedding model: it learns, reports, early-stops, cancels, and saves a
folder that reloads. A tiny BERT on a hand-written snapshot (tests/handmade_snapshot.py)."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fineloop.errors import Invalid
from fineloop.runtime import supports_bf16
from fineloop.tasks import get_task
from fineloop.tasks.base import JobCancelled, NullSink
from fineloop.tasks.embedding import EmbeddingTask, EmbeddingTrainConfig
from fineloop.tasks.embedding.evaluate import evaluate
from fineloop.tasks.embedding.losses import available_losses, get_loss
from handmade_snapshot import write_snapshot

TASK = EmbeddingTask()


def quick(**overrides: Any) -> EmbeddingTrainConfig:
    """Settings for a 32-d random BERT: a high rate, small batches, fp32 (deterministic)."""
    values: dict[str, Any] = {
        "epochs": 4,
        "batch_size": 8,
        "learning_rate": 1e-3,
        "warmup_ratio": 0.0,
        "precision": "fp32",
        "logging_steps": 1,
        **overrides,
    }
    return TASK.train_config(values)


@dataclass
class RecordingSink(NullSink):
    """Keeps everything a job runner would store; cancels once `cancel_after` steps ran."""

    cancel_after: int | None = None
    progress_seen: list[float] = field(default_factory=list)
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def progress(self, fraction: float, message: str = "") -> None:
        self.progress_seen.append(fraction)

    def metric(self, name: str, step: int, value: float) -> None:
        self.metrics.setdefault(name, []).append((step, value))

    def log(self, message: str) -> None:
        self.lines.append(message)

    def cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.progress_seen) >= self.cancel_after


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_snapshot(tmp_path_factory.mktemp("snapshot"))


@pytest.fixture(scope="module")
def base(_tiny_model_master: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    copy = tmp_path_factory.mktemp("base") / "model"
    shutil.copytree(_tiny_model_master, copy)
    return str(copy)


@pytest.fixture(scope="module")
def trained(
    snapshot: Path, base: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, RecordingSink]:
    sink = RecordingSink()
    out = TASK.train(snapshot, base, quick(), tmp_path_factory.mktemp("run") / "model", sink)
    return out, sink


def test_training_lowers_the_loss_and_beats_the_untrained_model(
    trained: tuple[Path, RecordingSink], snapshot: Path, base: str
) -> None:
    out, sink = trained
    losses = [value for _, value in sink.metrics["loss"]]
    assert len(losses) >= 8 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    before = evaluate(base, snapshot, "validation").metrics["ndcg@10"]
    after = evaluate(str(out), snapshot, "validation").metrics["ndcg@10"]
    assert after > before + 0.05
    # the sink saw the base score at step 0, then one evaluation per epoch
    steps = [step for step, _ in sink.metrics["eval_ndcg@10"]]
    assert steps[0] == 0 and len(steps) >= 3 and steps == sorted(steps)
    assert sink.metrics["eval_ndcg@10"][0][1] == pytest.approx(before)
    assert {"eval_accuracy@1", "eval_mrr@10", "eval_recall@10"} <= sink.metrics.keys()
    assert sink.progress_seen[-1] == 1.0
    assert any("validation ndcg@10" in line for line in sink.lines)


def test_the_saved_folder_reloads_and_carries_its_stamp(
    trained: tuple[Path, RecordingSink], base: str
) -> None:
    from sentence_transformers import SentenceTransformer

    out, _ = trained
    model = SentenceTransformer(str(out), device="cpu")
    assert model.encode(["lost my card"]).shape == (1, 32)
    info = json.loads((out / "fineloop.json").read_text())
    assert info["base_model"] == base
    assert info["snapshot_id"] == "handmade0001"
    assert info["fineloop_version"]
    assert EmbeddingTrainConfig.model_validate(info["config"]) == quick()
    assert (out / "README.md").exists()  # the library's model card
    assert not (out / ".work").exists()  # checkpoints are gone


def test_early_stopping_keeps_the_best_checkpoint(
    snapshot: Path, base: str, tmp_path: Path
) -> None:
    # Evaluate every step for up to 20 epochs, patience 2: nDCG@10 stops improving long
    # before the end (it cannot pass 1.0), so training stops early.
    config = quick(epochs=20, eval_steps=1, early_stopping_patience=2)
    out = TASK.train(snapshot, base, config, tmp_path / "model", NullSink())
    state = json.loads((out / "fineloop.json").read_text())["trainer"]
    assert state["global_step"] < state["max_steps"]
    scores = {
        entry["step"]: entry["eval_validation_cosine_ndcg@10"]
        for entry in state["log_history"]
        if "eval_validation_cosine_ndcg@10" in entry
    }
    best_step = max(scores, key=lambda step: (scores[step], -step))  # first of the best
    assert state["best_step"] == best_step < state["global_step"]
    assert state["best_metric"] == pytest.approx(max(scores.values()))
    kept = evaluate(str(out), snapshot, "validation").metrics["ndcg@10"]
    assert kept == pytest.approx(state["best_metric"], abs=1e-6)


@pytest.mark.parametrize(
    "loss", sorted(["mnrl", "cached_mnrl", "cosent", "contrastive", "online_contrastive"])
)
def test_every_builtin_loss_trains(loss: str, snapshot: Path, base: str, tmp_path: Path) -> None:
    sink = RecordingSink()
    out = TASK.train(snapshot, base, quick(loss=loss, max_steps=2), tmp_path / "m", sink)
    info = json.loads((out / "fineloop.json").read_text())
    assert info["config"]["loss"] == loss and info["trainer"]["global_step"] == 2
    assert len(sink.metrics["loss"]) == 2 and all(math.isfinite(v) for _, v in sink.metrics["loss"])
    assert get_loss(loss).columns  # each loss documents its input columns


def test_matryoshka_wraps_the_loss_within_the_model_size(
    snapshot: Path, base: str, tmp_path: Path
) -> None:
    out = TASK.train(
        snapshot, base, quick(matryoshka_dims=[16, 32], max_steps=2), tmp_path / "m", NullSink()
    )
    assert json.loads((out / "fineloop.json").read_text())["config"]["matryoshka_dims"] == [32, 16]
    with pytest.raises(Invalid, match="exceed the model's embedding size 32"):
        TASK.train(
            snapshot, base, quick(matryoshka_dims=[64], max_steps=1), tmp_path / "x", NullSink()
        )


def test_an_unknown_loss_is_invalid_and_lists_the_valid_names() -> None:
    with pytest.raises(Invalid) as caught:
        TASK.train_config({"loss": "triplet_of_doom"})
    assert caught.value.field == "train.loss"
    for name in ("mnrl", "cached_mnrl", "cosent", "contrastive", "online_contrastive"):
        assert name in caught.value.message
    assert set(available_losses()) >= {"mnrl", "cosent"}
    with pytest.raises(Invalid, match=r"train\.epochs"):
        TASK.train_config({"epochs": 0})
    with pytest.raises(Invalid, match=r"train\.nope"):
        TASK.train_config({"nope": 1})


def test_cancelling_stops_training_and_saves_nothing(
    snapshot: Path, base: str, tmp_path: Path
) -> None:
    sink = RecordingSink(cancel_after=3)
    with pytest.raises(JobCancelled):
        TASK.train(snapshot, base, quick(epochs=50), tmp_path / "m", sink)
    assert len(sink.progress_seen) == 3 and sink.progress_seen[-1] < 0.05
    assert not (tmp_path / "m" / "fineloop.json").exists()
    assert not (tmp_path / "m" / ".work").exists()


def test_bf16_runs_are_scored_in_fp32_as_saved(snapshot: Path, base: str, tmp_path: Path) -> None:
    out = TASK.train(
        snapshot, base, quick(precision="bf16", max_steps=3), tmp_path / "m", NullSink()
    )
    info = json.loads((out / "fineloop.json").read_text())
    assert info["precision"] == "bf16"
    reloaded = evaluate(str(out), snapshot, "validation").metrics["ndcg@10"]
    assert info["validation"]["ndcg@10"] == pytest.approx(reloaded, abs=1e-9)


@pytest.mark.skipif(not supports_bf16(), reason="auto picks fp32 here: nothing to fall back from")
def test_auto_precision_retrains_in_fp32_when_bf16_ends_below_the_base(
    snapshot: Path, base: str, tmp_path: Path
) -> None:
    # A learning rate this high wrecks the model in any precision: the bf16 run ends below
    # the base model, so the rule reruns in fp32 and keeps the better of the two.
    config = quick(precision="auto", learning_rate=0.5, max_steps=3, early_stopping_patience=None)
    out = TASK.train(snapshot, base, config, tmp_path / "m", NullSink())
    validation = json.loads((out / "fineloop.json").read_text())["validation"]
    runs = validation["runs"]
    assert runs["bf16"] < validation["base_ndcg@10"]
    assert set(runs) == {"bf16", "fp32"}
    assert validation["ndcg@10"] == max(runs.values())


def test_the_task_is_found_by_name_and_defaults_to_the_packaged_minilm() -> None:
    task = get_task("embedding")
    assert isinstance(task, EmbeddingTask)
    assert task.name == "embedding" and task.primary_metric == "ndcg@10"
    assert (Path(task.default_base_model()) / "modules.json").exists()
    assert task.train_config({}) == EmbeddingTrainConfig()


def test_a_snapshot_without_training_rows_is_invalid(base: str, tmp_path: Path) -> None:
    from datasets import DatasetDict, load_from_disk

    snapshot = write_snapshot(tmp_path / "s")
    pairs = load_from_disk(str(snapshot / "pairs"))
    DatasetDict({"test": pairs["test"]}).save_to_disk(str(tmp_path / "pairs"))
    shutil.rmtree(snapshot / "pairs")
    shutil.move(str(tmp_path / "pairs"), str(snapshot / "pairs"))
    with pytest.raises(Invalid, match="train split is empty"):
        TASK.train(snapshot, base, quick(), tmp_path / "m", NullSink())


def test_a_registered_loss_is_accepted_by_name(snapshot: Path, base: str, tmp_path: Path) -> None:
    from fineloop.errors import Conflict
    from fineloop.tasks.embedding import losses

    mnrl = get_loss("mnrl")
    spec = losses.LossSpec(
        name="pairs_only",
        summary="MNRL without hard negatives",
        columns="(anchor, positive)",
        build=mnrl.build,
        prepare=lambda rows, negatives, k: losses.with_negatives(rows, negatives, 0),
        in_batch_negatives=True,
    )
    losses.register_loss(spec)
    try:
        with pytest.raises(Conflict):
            losses.register_loss(spec)
        out = TASK.train(
            snapshot, base, quick(loss="pairs_only", max_steps=1), tmp_path / "m", NullSink()
        )
        assert json.loads((out / "fineloop.json").read_text())["config"]["loss"] == "pairs_only"
    finally:
        losses._REGISTRY.pop("pairs_only")
