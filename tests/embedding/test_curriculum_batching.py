"""Curriculum (easy rows first) and batch_size "auto" (the largest batch whose step fits a
memory budget), on a tiny BERT and the hand-written snapshot (tests/handmade_snapshot.py).

The probes measure real steps; where a test needs the same measurements under several
budgets, it records each size's measured need once and hands the record to the chooser,
so the comparison is between budgets, not between two noisy measurements."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_train import TASK, RecordingSink, quick

from fineloop.errors import Invalid
from fineloop.tasks.embedding import EmbeddingTrainConfig
from fineloop.tasks.embedding.batching import Probe, choose, plan_batch, sizes
from fineloop.tasks.embedding.curriculum import (
    OrderedBatchSampler,
    OrderedNoDuplicatesBatchSampler,
    curriculum_rows,
)
from fineloop.tasks.embedding.evaluate import read_corpus, read_pairs
from fineloop.tasks.embedding.fit import arguments
from fineloop.tasks.embedding.losses import Negatives, get_loss
from fineloop.tasks.embedding.train import group_positives

TEXT_COLUMNS = ("anchor", "positive", "negative_1")


def write_snapshot(out_dir: Path) -> Path:
    """handmade_snapshot's snapshot, with any column the snapshot layout has gained since
    (e.g. synthetic-row lineage) filled with its empty value."""
    from datasets import Dataset, DatasetDict, Features

    import handmade_snapshot
    from fineloop.tasks.embedding.build import pair_features

    features = Features(pair_features())
    empty = {"synthetic": False, "feedback_ids": [], "negatives": [], "negative_ids": []}
    splits = handmade_snapshot.rows()
    for split in splits.values():
        for row in split:
            for name in features:
                row.setdefault(name, empty.get(name, ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    DatasetDict(
        {name: Dataset.from_list(rows, features=features) for name, rows in splits.items()}
    ).save_to_disk(str(out_dir / "pairs"))
    items = handmade_snapshot.ITEMS
    Dataset.from_dict({"id": list(items), "text": list(items.values())}).save_to_disk(
        str(out_dir / "corpus")
    )
    meta = {
        "id": "handmade0001",
        "project": "handmade",
        "task": "embedding",
        "config": {"seed": 13},
        "splits": {name: len(rows) for name, rows in splits.items()},
        "stats": {},
        "feedback_watermark": 0,
        "fineloop_version": "test",
    }
    (out_dir / "snapshot.json").write_text(json.dumps(meta, indent=2))
    return out_dir


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_snapshot(tmp_path_factory.mktemp("snapshot"))


@pytest.fixture(scope="module")
def base(_tiny_model_master: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    copy = tmp_path_factory.mktemp("base") / "model"
    shutil.copytree(_tiny_model_master, copy)
    return str(copy)


@pytest.fixture(scope="module")
def model(base: str) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(base, device="cpu")


def ordered(snapshot: Path, model: Any, base: str, how: str) -> tuple[Any, dict[str, Any]]:
    pairs = read_pairs(snapshot)
    corpus = read_corpus(snapshot)
    return curriculum_rows(
        how,
        pairs["train"],
        seed=13,
        model=model,
        model_path=base,
        corpus=list(corpus.values()),
        positives=group_positives(pairs),
        folder=None,
    )


def prepared(snapshot: Path, split: Any, loss: str = "mnrl") -> Any:
    pairs = read_pairs(snapshot)
    corpus = read_corpus(snapshot)
    negatives = Negatives(sorted(set(corpus.values())), group_positives(pairs), 13)
    return get_loss(loss).prepare(split, negatives, 1)


def trainer_batches(model: Any, config: EmbeddingTrainConfig, rows: Any, tmp: Path) -> Any:
    """The batches the trainer's own sampler dispatch makes from these training args."""
    from sentence_transformers import SentenceTransformerTrainer

    spec = get_loss(config.loss)
    args = arguments(config, spec, tmp, bf16=False, evaluate=False)
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=rows, loss=get_loss(config.loss).build(model, config)
    )
    sampler = trainer.get_batch_sampler(
        rows,
        batch_size=8,
        drop_last=False,
        valid_label_columns=trainer.data_collator.valid_label_columns,
        seed=13,
    )
    return args, sampler


# --- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"batch_size": "big"}, "train.batch_size"),
        ({"batch_size": 1}, "train.batch_size"),
        ({"memory_budget_mb": -5}, "train.memory_budget_mb"),
        ({"memory_budget_mb": 0}, "train.memory_budget_mb"),
        ({"curriculum": "hardest_first"}, "train.curriculum"),
        ({"auto_batch_min": 64, "auto_batch_max": 16}, "train.auto_batch_max"),
    ],
)
def test_bad_values_are_invalid_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(Invalid) as caught:
        EmbeddingTrainConfig.parse(overrides)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_batch_size_takes_a_number_or_auto_and_curriculum_is_off_by_default() -> None:
    assert EmbeddingTrainConfig.parse({"batch_size": 16}).batch_size == 16
    assert EmbeddingTrainConfig.parse({"batch_size": "auto"}).batch_size == "auto"
    assert EmbeddingTrainConfig.parse({}).curriculum == "off"


# --- curriculum ---------------------------------------------------------------------------


def test_base_loss_batches_go_from_easy_to_hard_without_repeating_a_text(
    snapshot: Path, model: Any, base: str, tmp_path: Path
) -> None:
    split, info = ordered(snapshot, model, base, "base_loss")
    assert info["order"] == "base_loss" and info["rows"] == len(split)
    # The expected order, computed here from the model: the margin of each row is the
    # positive's cosine minus that of the closest catalog item that is not a positive.
    corpus = list(read_corpus(snapshot).values())
    anchors, answers = list(split["anchor"]), list(split["positive"])
    queries = model.encode(anchors, normalize_embeddings=True)
    items = model.encode(corpus, normalize_embeddings=True)
    sims = queries @ items.T
    margins = []
    for row, answer in enumerate(answers):
        right = corpus.index(answer)
        others = np.delete(sims[row], right)
        margins.append(float(sims[row, right] - others.max()))
    assert all(a >= b - 1e-5 for a, b in itertools.pairwise(margins))
    assert margins[0] > margins[-1]  # not all equal: there is an order to keep
    assert info["easiest"] == pytest.approx(margins[0], abs=1e-5)

    rows = prepared(snapshot, split)
    config = quick(curriculum="base_loss", batch_size=8)
    args, sampler = trainer_batches(model, config, rows, tmp_path)
    assert args.batch_sampler is OrderedNoDuplicatesBatchSampler
    batches = list(sampler)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(rows)))  # every row once
    assert batches[0][0] == 0  # the easiest row opens the epoch
    texts = [{rows[i][c] for c in TEXT_COLUMNS} for i in range(len(rows))]
    batch_of = {i: n for n, batch in enumerate(batches) for i in batch}
    for batch in batches:
        assert batch == sorted(batch)  # in curriculum order within a batch
        seen: set[str] = set()
        for i in batch:  # no text twice in a batch (in-batch negatives stay negatives)
            assert texts[i].isdisjoint(seen)
            seen |= texts[i]
    # a row only ever waits: an easier row lands in a later batch only if it shares a
    # text with the batch the harder row went into
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if batch_of[j] < batch_of[i]:
                earlier = set().union(*(texts[k] for k in batches[batch_of[j]]))
                assert not texts[i].isdisjoint(earlier)


def test_feedback_curriculum_puts_higher_scores_first_in_consecutive_batches(
    snapshot: Path, model: Any, base: str, tmp_path: Path
) -> None:
    split, info = ordered(snapshot, model, base, "feedback")
    scores = list(split["score"])
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    assert info["order"] == "feedback"
    # a pair loss (no in-batch negatives) reads the prepared rows consecutively
    rows = prepared(snapshot, split, "cosent")
    config = quick(curriculum="feedback", loss="cosent", batch_size=8)
    args, sampler = trainer_batches(model, config, rows, tmp_path)
    assert args.batch_sampler is OrderedBatchSampler
    assert [i for batch in sampler for i in batch] == list(range(len(rows)))


def test_off_keeps_the_library_samplers_and_the_snapshot_order(
    snapshot: Path, model: Any, base: str, tmp_path: Path
) -> None:
    from sentence_transformers.base.sampler import BatchSamplers

    split, info = ordered(snapshot, model, base, "off")
    assert list(split["anchor"]) == list(read_pairs(snapshot)["train"]["anchor"])
    assert info["order"] == "off"
    for loss, expected in (
        ("mnrl", BatchSamplers.NO_DUPLICATES),
        ("cosent", BatchSamplers.BATCH_SAMPLER),
    ):
        args = arguments(quick(loss=loss), get_loss(loss), tmp_path, bf16=False, evaluate=False)
        assert args.batch_sampler == expected


# --- batch size auto ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def probe(snapshot: Path, model: Any, tmp_path_factory: pytest.TempPathFactory) -> Probe:
    split = read_pairs(snapshot)["train"]
    return Probe(model, prepared(snapshot, split), quick(), tmp_path_factory.mktemp("probe"))


@pytest.fixture(scope="module")
def recorded(probe: Probe) -> Any:
    """The probe's measurement of each (loss, batch, mini-batch), taken once."""
    needs: dict[tuple[str, int, int | None], float] = {}

    def need(loss: str, batch: int, mini: int | None) -> float:
        if (loss, batch, mini) not in needs:
            needs[(loss, batch, mini)] = probe.need_mb(loss, batch, mini)
        return needs[(loss, batch, mini)]

    return need


def test_sizes_are_powers_of_two_up_to_the_cap_and_the_rows() -> None:
    assert sizes(8, 512, 36) == [8, 16, 32]
    assert sizes(8, 16, 1000) == [8, 16]
    assert sizes(6, 64, 40) == [8, 16, 32]
    assert sizes(8, 512, 5) == [4]


def test_auto_picks_the_largest_power_of_two_within_rows_and_cap(
    snapshot: Path, model: Any, tmp_path: Path
) -> None:
    rows = prepared(snapshot, read_pairs(snapshot)["train"])
    roomy = quick(batch_size="auto", memory_budget_mb=100_000)
    plan = plan_batch(model, rows, roomy, tmp_path)
    assert plan.batch_size == 32 <= len(rows)  # 36 rows: 64 would exceed them
    assert plan.loss == "mnrl" and plan.cached_mini_batch_size is None
    assert set(plan.needs_mb) == {"mnrl@8", "mnrl@16", "mnrl@32"}
    assert all(value > 0 for value in plan.needs_mb.values())
    capped = plan_batch(model, rows, quick(batch_size="auto", auto_batch_max=16), tmp_path)
    assert capped.batch_size == 16  # default budget: half the free RAM, plenty here


def test_a_smaller_budget_never_gives_a_larger_batch(recorded: Any) -> None:
    candidates = [8, 16, 32]
    full = choose(candidates, "mnrl", 100_000, recorded)
    assert full.batch_size == 32 and full.loss == "mnrl"
    need = {size: recorded("mnrl", size, None) for size in candidates}
    assert need[8] < need[16] < need[32]  # activations grow with the batch
    budgets = sorted({*need.values(), need[32] * 2}, reverse=True)
    resident = []  # examples encoded with gradients at once
    for budget in budgets:
        plan = choose(candidates, "mnrl", budget, recorded)
        assert plan.batch_size in candidates
        resident.append(plan.cached_mini_batch_size or plan.batch_size)
    assert resident == sorted(resident, reverse=True)
    tight = choose(candidates, "mnrl", need[8], recorded)
    assert (tight.cached_mini_batch_size or tight.batch_size) == 8  # forced down
    if tight.loss == "cached_mnrl":  # a bigger batch is still wanted: gradient caching
        assert tight.batch_size == 32
        assert recorded("cached_mnrl", 32, 8) <= need[8]


def test_a_budget_below_the_smallest_step_is_invalid(probe: Probe) -> None:
    with pytest.raises(Invalid) as caught:
        choose([8, 16], "mnrl", 0.001, probe.need_mb)  # below even the AdamW state
    assert caught.value.field == "train.memory_budget_mb"


def test_training_with_both_stamps_the_order_and_the_batch(
    snapshot: Path, base: str, tmp_path: Path
) -> None:
    config = quick(
        curriculum="base_loss",
        batch_size="auto",
        memory_budget_mb=100_000,
        auto_batch_max=16,
        epochs=1,
        max_steps=3,
    )
    sink = RecordingSink()
    out = TASK.train(snapshot, base, config, tmp_path / "model", sink)
    info = json.loads((out / "fineloop.json").read_text())
    assert info["config"]["batch_size"] == "auto"  # what was asked
    assert info["config"]["curriculum"] == "base_loss"
    assert info["batch"]["requested"] == "auto" and info["batch"]["batch_size"] == 16
    assert info["batch"]["loss"] == "mnrl" and info["batch"]["method"]
    assert info["curriculum"]["order"] == "base_loss"
    assert info["curriculum"]["easiest"] >= info["curriculum"]["hardest"]
    assert any(line.startswith("batch_size auto: 16") for line in sink.lines)
    assert any("batch 16" in line for line in sink.lines)


def test_the_api_takes_them_as_training_overrides_and_names_a_bad_one(
    client: Any, project: str
) -> None:
    good = {"train": {"curriculum": "feedback", "batch_size": "auto", "memory_budget_mb": 2048}}
    response = client.patch(f"/v1/projects/{project}", json={"training_policy": good})
    assert response.status_code == 200, response.text
    stored = client.get(f"/v1/projects/{project}").json()["training_policy"]["train"]
    assert stored["curriculum"] == "feedback" and stored["batch_size"] == "auto"
    for overrides, field in (
        ({"batch_size": "big"}, "train.batch_size"),
        ({"memory_budget_mb": -1}, "train.memory_budget_mb"),
        ({"curriculum": "hard_first"}, "train.curriculum"),
    ):
        response = client.post(f"/v1/projects/{project}/train", json={"overrides": overrides})
        assert response.status_code == 422, response.text
        assert field in response.text
