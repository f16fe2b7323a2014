"""Training a tiny Llama with LoRA through TRL: which stages run, that they learn, that an
adapter is continued with replay, and that a cancel leaves nothing behind."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from fineloop.errors import Invalid
from fineloop.runtime import supports_bf16
from fineloop.tasks.base import JobCancelled
from fineloop.tasks.generation.config import GenerationTrainConfig
from fineloop.tasks.generation.evaluate import likelihood_metrics
from fineloop.tasks.generation.models import ADAPTER_META, load_causal_lm, split_model
from fineloop.tasks.generation.train import RECORD, train
from fineloop.tasks.generation.train_rows import (
    choose_methods,
    kto_weights,
    replay_count,
)

PROMPTS = [
    "how do i reset my password",
    "where is my invoice",
    "can i cancel my plan",
    "how to invite a colleague",
    "my card is lost",
    "how to export data",
    "delete my account",
    "change my email",
]
ANSWER = "find the account and change the email"
CHOSEN, REJECTED = ANSWER, "close the door and the window"  # a correction beats the reply
FAST: dict[str, Any] = {"bf16": False, "batch_size": 4, "logging_steps": 1, "lora_r": 8}


class RecordingSink:
    """Keeps what a run reports; answers `cancelled` True after `cancel_after` steps."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.progress_seen: list[float] = []
        self.metrics: list[tuple[str, int, float]] = []
        self.logs: list[str] = []
        self.cancel_after = cancel_after

    def progress(self, fraction: float, message: str = "") -> None:
        self.progress_seen.append(fraction)

    def metric(self, name: str, step: int, value: float) -> None:
        self.metrics.append((name, step, value))

    def log(self, message: str) -> None:
        self.logs.append(message)

    def cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.progress_seen) >= self.cancel_after


def config(**overrides: Any) -> GenerationTrainConfig:
    return GenerationTrainConfig.parse({**FAST, **overrides})


@pytest.fixture(scope="module")
def all_rows(make_row: Callable[..., dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    return {
        "sft": [make_row(p, "train", completion=ANSWER) for p in PROMPTS],
        "dpo": [make_row(p, "train", chosen=CHOSEN, rejected=REJECTED) for p in PROMPTS],
        "kto": [
            make_row(p, "train", completion=ANSWER, label=i < 6) for i, p in enumerate(PROMPTS)
        ],
    }


@pytest.fixture(scope="module")
def snapshot(
    tmp_path_factory: pytest.TempPathFactory, snapshot_writer: Callable[..., Path], all_rows: Any
) -> Path:
    return snapshot_writer(tmp_path_factory.mktemp("snap") / "s", all_rows, id="snap-1")


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path, snapshot: Path
) -> tuple[Path, RecordingSink]:
    """One auto run (sft then dpo) shared by the tests that only read its result."""
    sink = RecordingSink()
    out = tmp_path_factory.mktemp("trained") / "adapter"
    train(snapshot, str(tiny_llama), config(max_steps=8, learning_rate=1e-2), out, sink)
    return out, sink


def test_auto_run_trains_sft_then_dpo_into_an_adapter_folder(
    trained: tuple[Path, RecordingSink], tiny_llama: Path
) -> None:
    out, sink = trained
    record = json.loads((out / RECORD).read_text())
    assert record["methods"] == ["sft", "dpo"]  # kto rows are left out when pairs exist
    assert record["rows"] == {"sft": 8, "dpo": 8}
    assert record["replay_rows"] == {"sft": 0, "dpo": 0}  # a fresh adapter has no replay
    assert set(record["metrics"]) == {"sft", "dpo"}
    assert record["snapshot_id"] == "snap-1"
    assert record["qlora"] is (torch.cuda.is_available() and record["qlora"])  # CPU: off
    assert (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()  # never a merged model
    assert not (out / "ref").exists()  # only the trained adapter is saved
    assert split_model(str(out)) == (str(tiny_llama), str(out))
    assert json.loads((out / ADAPTER_META).read_text()) == {"base_model": str(tiny_llama)}
    assert sorted(p.name for p in (out / "replay").iterdir()) == ["dpo", "sft"]
    assert not (out / ".work").exists()
    # progress covers both stages and ends at 1; metric steps keep rising across stages
    assert sink.progress_seen[-1] == 1.0
    assert any(0.4 < f <= 0.5 for f in sink.progress_seen)  # the end of the first stage
    losses = [(step, value) for name, step, value in sink.metrics if name == "loss"]
    assert [step for step, _ in losses] == sorted(step for step, _ in losses)
    assert max(step for step, _ in losses) == 16
    assert any(name == "rewards/margins" for name, _, _ in sink.metrics)
    assert any("dpo" in line for line in sink.logs)


def test_sft_lowers_the_loss_on_its_train_rows(
    trained: tuple[Path, RecordingSink], tiny_llama: Path, snapshot: Path
) -> None:
    before = likelihood_metrics(str(tiny_llama), snapshot, "train")
    after = likelihood_metrics(str(trained[0]), snapshot, "train")
    assert after["sft_loss"] < before["sft_loss"] - 1.0
    assert after["perplexity"] < before["perplexity"]


def test_dpo_raises_the_log_prob_margin_of_its_pairs(
    tmp_path: Path,
    tiny_llama: Path,
    all_rows: Any,
    snapshot_writer: Callable[..., Path],
) -> None:
    pairs = snapshot_writer(tmp_path / "pairs", {"dpo": all_rows["dpo"]})
    out = tmp_path / "dpo"
    train(
        pairs,
        str(tiny_llama),
        config(method="dpo", max_steps=6, learning_rate=1e-2),
        out,
        RecordingSink(),
    )
    assert json.loads((out / RECORD).read_text())["methods"] == ["dpo"]
    before = likelihood_metrics(str(tiny_llama), pairs, "train")
    after = likelihood_metrics(str(out), pairs, "train")
    assert after["preference_margin"] > before["preference_margin"] + 1.0
    assert after["preference_accuracy"] > before["preference_accuracy"]
    assert after["preference_accuracy"] == 1.0


def test_kto_runs_with_weights_from_the_label_ratio(
    tmp_path: Path, tiny_llama: Path, all_rows: Any, snapshot_writer: Callable[..., Path]
) -> None:
    thumbs = snapshot_writer(tmp_path / "thumbs", {"kto": all_rows["kto"]})  # 6 up, 2 down
    out = tmp_path / "kto"
    train(thumbs, str(tiny_llama), config(max_steps=3, bf16="auto"), out, RecordingSink())
    record = json.loads((out / RECORD).read_text())
    assert record["methods"] == ["kto"]
    weights = record["kto_weights"]
    assert (weights["desirable"], weights["undesirable"]) == (6, 2)
    assert weights["desirable_weight"] < weights["undesirable_weight"]  # the majority is damped
    ratio = weights["desirable_weight"] * 6 / (weights["undesirable_weight"] * 2)
    assert 1.0 <= ratio <= 4 / 3
    assert (out / "adapter_model.safetensors").is_file()
    assert record["precision"] == ("bf16" if supports_bf16() else "fp32")  # the default


@pytest.mark.parametrize(
    ("desirable", "undesirable"), [(6, 2), (2, 6), (5, 4), (4, 4), (1, 9), (10, 0)]
)
def test_kto_weights_land_in_trl_recommended_range(desirable: int, undesirable: int) -> None:
    weights = kto_weights([True] * desirable + [False] * undesirable)
    assert 0 < weights["desirable_weight"] <= 1 and 0 < weights["undesirable_weight"] <= 1
    if undesirable:
        ratio = (weights["desirable_weight"] * desirable) / (
            weights["undesirable_weight"] * undesirable
        )
        assert 1.0 <= ratio <= 4 / 3 + 1e-9


def test_auto_picks_the_methods_the_data_allows() -> None:
    assert choose_methods("auto", {"sft": 3, "dpo": 2, "kto": 5}) == ["sft", "dpo"]
    assert choose_methods("auto", {"sft": 3, "dpo": 0, "kto": 5}) == ["sft", "kto"]
    assert choose_methods("auto", {"sft": 0, "dpo": 0, "kto": 5}) == ["kto"]
    assert choose_methods("sft+dpo", {"sft": 1, "dpo": 1, "kto": 0}) == ["sft", "dpo"]
    with pytest.raises(Invalid, match="nothing to train on"):
        choose_methods("auto", {"sft": 0, "dpo": 0, "kto": 0})
    with pytest.raises(Invalid, match="needs dpo rows") as error:
        choose_methods("sft+dpo", {"sft": 4, "dpo": 0, "kto": 0})
    assert error.value.field == "train.method"


def test_a_snapshot_with_nothing_to_train_is_refused(
    tmp_path: Path, tiny_llama: Path, snapshot_writer: Callable[..., Path], make_row: Any
) -> None:
    only_test = {"sft": [make_row("where is my invoice", "test", completion=ANSWER)]}
    empty = snapshot_writer(tmp_path / "empty", only_test)
    with pytest.raises(Invalid, match="nothing to train on") as error:
        train(empty, str(tiny_llama), config(), tmp_path / "out", RecordingSink())
    assert error.value.field == "snapshot"
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()


def test_training_from_an_adapter_continues_it_and_mixes_its_replay(
    tmp_path: Path,
    tiny_llama: Path,
    trained: tuple[Path, RecordingSink],
    all_rows: Any,
    snapshot_writer: Callable[..., Path],
) -> None:
    champion = trained[0]
    fresh_sft = snapshot_writer(tmp_path / "new", {"sft": all_rows["sft"][:4]})
    settings = config(method="sft", max_steps=2, replay_share=0.5)
    continued, fresh = tmp_path / "continued", tmp_path / "fresh"
    train(fresh_sft, str(champion), settings, continued, RecordingSink())
    train(fresh_sft, str(tiny_llama), settings, fresh, RecordingSink())

    record = json.loads((continued / RECORD).read_text())
    assert record["continued_from"] == str(champion)
    assert record["rows"] == {"sft": 4}
    assert record["replay_rows"] == {"sft": replay_count(4, 8, 0.5)} == {"sft": 4}
    assert record["replay_saved"]["sft"] == 4 + 8  # its own rows plus the old replay
    assert record["replay_saved"]["dpo"] == 8  # carried over though dpo did not run
    assert json.loads((fresh / RECORD).read_text())["replay_rows"] == {"sft": 0}
    # the base stays the original model, never the champion adapter
    assert json.loads((continued / ADAPTER_META).read_text()) == {"base_model": str(tiny_llama)}
    ours = load_file(continued / "adapter_model.safetensors")
    others = load_file(fresh / "adapter_model.safetensors")
    start = load_file(champion / "adapter_model.safetensors")
    assert ours.keys() == others.keys() == start.keys()
    to_fresh = sum(float((ours[k] - others[k]).abs().sum()) for k in ours)
    to_start = sum(float((ours[k] - start[k]).abs().sum()) for k in ours)
    assert to_start < to_fresh  # two small steps from the champion stay near it


def test_cancel_raises_and_writes_no_adapter(
    tmp_path: Path, tiny_llama: Path, snapshot: Path
) -> None:
    sink = RecordingSink(cancel_after=2)
    out = tmp_path / "cancelled"
    with pytest.raises(JobCancelled):
        train(snapshot, str(tiny_llama), config(max_steps=50), out, sink)
    assert len(sink.progress_seen) == 2  # stopped at the step it was asked to
    leftovers = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert leftovers == [] or "adapter_model.safetensors" not in leftovers
    assert not (out / ".work").exists()
    assert not (out / "adapter_config.json").exists()


def test_pickle_only_weights_are_refused(tmp_path: Path, tiny_llama: Path, snapshot: Path) -> None:
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_llama, pickled)
    weights = pickled / "model.safetensors"
    torch.save(load_file(weights), pickled / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(Invalid, match="safetensors") as error:
        load_causal_lm(str(pickled))
    assert error.value.field == "base_model"
    with pytest.raises(Invalid, match="safetensors"):
        train(snapshot, str(pickled), config(max_steps=1), tmp_path / "out", RecordingSink())


def test_pickled_adapter_weights_are_refused(
    tmp_path: Path, trained: tuple[Path, RecordingSink]
) -> None:
    adapter = tmp_path / "adapter"
    shutil.copytree(trained[0], adapter)
    weights = adapter / "adapter_model.safetensors"
    torch.save(load_file(weights), adapter / "adapter_model.bin")
    weights.unlink()
    with pytest.raises(Invalid, match="safetensors"):
        split_model(str(adapter))


def test_config_refuses_bad_values_naming_the_field() -> None:
    with pytest.raises(Invalid) as error:
        GenerationTrainConfig.parse({"method": "ppo"})
    assert error.value.field == "train.method"
    with pytest.raises(Invalid) as error:
        GenerationTrainConfig.parse({"replay_share": 0.95})
    assert error.value.field == "train.replay_share"
    with pytest.raises(Invalid, match="unknown metric"):
        GenerationTrainConfig.parse({"primary_metric": "accuracy"})
    with pytest.raises(Invalid):
        GenerationTrainConfig.parse({"lora_rank": 8})  # unknown keys are refused
    assert GenerationTrainConfig.parse({}).target_modules == "all-linear"


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU 4-bit loading may be possible")
def test_qlora_is_refused_without_cuda_and_auto_stays_off(
    tmp_path: Path, tiny_llama: Path, snapshot: Path
) -> None:
    with pytest.raises(Invalid, match="CUDA") as error:
        train(snapshot, str(tiny_llama), config(qlora=True), tmp_path / "out", RecordingSink())
    assert error.value.field == "train.qlora"
    assert not (tmp_path / "out" / "adapter_config.json").exists()


def test_replay_is_capped_per_method_and_drawn_with_the_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datasets import Dataset  # type: ignore[import-untyped]

    from fineloop.tasks.generation import train_rows

    def sft(n: int, tag: str) -> Dataset:
        return Dataset.from_dict(
            {
                "prompt": [[{"role": "user", "content": f"{tag} {i}"}] for i in range(n)],
                "completion": [[{"role": "assistant", "content": "ok"}] for _ in range(n)],
            }
        )

    monkeypatch.setattr(train_rows, "REPLAY_CAP", 5)
    sizes = train_rows.write_replay(tmp_path, {"sft": sft(4, "new")}, {"sft": sft(6, "old")}, 7)
    assert sizes == {"sft": 5}
    kept = train_rows.read_replay(str(tmp_path))["sft"]
    assert len(kept) == 5
    mixed, count = train_rows.mix(sft(8, "new"), kept, 0.2, seed=3)
    assert count == replay_count(8, 5, 0.2) == 2 and len(mixed) == 10
    again, _ = train_rows.mix(sft(8, "new"), kept, 0.2, seed=3)
    assert mixed["prompt"] == again["prompt"]  # the same seed draws the same replay rows
    assert train_rows.mix(sft(8, "new"), kept, 0.0, seed=3)[1] == 0  # share 0: no replay
