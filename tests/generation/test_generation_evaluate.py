"""Evaluating a generation model on a snapshot split: every metric, its direction, the
per-example order the gate pairs on, and that an adapter scores as its merged model does."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from fineloop.errors import Invalid
from fineloop.tasks.base import Evaluation, NullSink
from fineloop.tasks.generation.config import METRICS, GenerationTrainConfig
from fineloop.tasks.generation.eval_scoring import generate, prompt_text
from fineloop.tasks.generation.evaluate import (
    choose_primary,
    evaluate,
    load_for_scoring,
    read_examples,
)
from fineloop.tasks.generation.metrics import SIMILARITIES
from fineloop.tasks.generation.models import load_causal_lm, load_tokenizer
from fineloop.tasks.generation.train import train

PROMPTS = [
    "how do i reset my password",
    "where is my invoice",
    "can i cancel my plan",
    "how to invite a colleague",
    "my card is lost",
    "how to export data",
]
ANSWER = "find the account and change the email"
OTHER = "close the door and the window"
SIMILARITY = tuple(SIMILARITIES)


@pytest.fixture(scope="module")
def snapshot(
    tmp_path_factory: pytest.TempPathFactory,
    snapshot_writer: Callable[..., Path],
    make_row: Callable[..., dict[str, Any]],
) -> Path:
    """train: 6 sft rows; test: 4 sft rows, 3 kto rows (2 desirable), 3 dpo pairs."""
    rows = {
        "sft": [make_row(p, "train", completion=ANSWER) for p in PROMPTS]
        + [make_row(p + " now", "test", completion=ANSWER) for p in PROMPTS[:4]],
        "kto": [
            make_row(p + " please", "test", completion=ANSWER if up else OTHER, label=up)
            for p, up in zip(PROMPTS[:3], (True, False, True), strict=True)
        ],
        "dpo": [make_row(p + " today", "test", chosen=ANSWER, rejected=OTHER) for p in PROMPTS[:3]],
    }
    return snapshot_writer(tmp_path_factory.mktemp("snap") / "s", rows)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path, snapshot: Path) -> Path:
    settings = GenerationTrainConfig.parse(
        {"method": "sft", "max_steps": 10, "learning_rate": 1e-2, "bf16": False, "lora_r": 8}
    )
    out = tmp_path_factory.mktemp("adapter") / "a"
    return train(snapshot, str(tiny_llama), settings, out, NullSink())


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory, adapter: Path, tiny_llama: Path) -> Path:
    """The adapter folded into its base: a full model folder that should score the same."""
    from peft import PeftModel

    folder = tmp_path_factory.mktemp("merged") / "m"
    model = PeftModel.from_pretrained(load_causal_lm(str(tiny_llama)), str(adapter))
    model.merge_and_unload().save_pretrained(folder)
    load_tokenizer(str(tiny_llama)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def scored(adapter: Path, tiny_llama: Path, snapshot: Path) -> dict[str, Evaluation]:
    return {
        "adapter": evaluate(str(adapter), snapshot),
        "base": evaluate(str(tiny_llama), snapshot),
    }


def test_every_metric_is_reported_in_its_range(scored: dict[str, Evaluation]) -> None:
    result = scored["adapter"]
    assert set(METRICS) <= set(result.metrics)
    assert all(math.isfinite(value) for value in result.metrics.values())
    for name in (*SIMILARITY, "preference_accuracy"):
        assert 0.0 <= result.metrics[name] <= 1.0, name
    assert result.metrics["perplexity"] == pytest.approx(math.exp(result.metrics["sft_loss"]))
    assert result.metrics["completion_examples"] == 4 + 2  # sft rows + desirable kto rows
    assert result.metrics["preference_examples"] == 3
    # a few greedy replies kept beside their prompts and references, for people to read
    assert len(result.samples) == 8  # of the 6 + 3 references
    assert result.samples[0]["reference"] == ANSWER
    assert result.samples[0]["input"]["messages"][0]["content"] == PROMPTS[0] + " now"


def test_auto_primary_is_sft_loss_lower_is_better_per_completion(
    scored: dict[str, Evaluation],
) -> None:
    result = scored["adapter"]
    assert result.primary == "sft_loss"
    assert result.higher_is_better is False
    assert len(result.per_example) == 6
    assert sum(result.per_example) / 6 == pytest.approx(result.metrics["sft_loss"])
    # the trained adapter is better, and `improvement` reads the direction right
    assert result.metrics["sft_loss"] < scored["base"].metrics["sft_loss"]
    assert result.improvement(scored["base"]) > 0
    assert scored["base"].improvement(result) < 0


def test_training_brings_greedy_replies_closer_to_the_reference(
    scored: dict[str, Evaluation],
) -> None:
    trained, base = scored["adapter"].metrics, scored["base"].metrics
    assert trained["edit_ratio"] > base["edit_ratio"]
    assert trained["rouge_l"] > base["rouge_l"]
    assert trained["embedding_cosine"] > base["embedding_cosine"]


def test_preference_primary_is_higher_is_better_per_pair(adapter: Path, snapshot: Path) -> None:
    result = evaluate(str(adapter), snapshot, primary="preference_accuracy")
    assert result.primary == "preference_accuracy" and result.higher_is_better is True
    assert len(result.per_example) == 3
    assert set(result.per_example) <= {0.0, 1.0}
    assert sum(result.per_example) / 3 == pytest.approx(result.metrics["preference_accuracy"])


def test_a_full_model_and_its_adapter_evaluate_alike_on_the_same_rows(
    merged: Path, scored: dict[str, Evaluation], snapshot: Path
) -> None:
    full = evaluate(str(merged), snapshot)
    ours = scored["adapter"]
    assert len(full.per_example) == len(ours.per_example) == 6
    assert full.per_example == pytest.approx(ours.per_example, abs=1e-3)
    assert full.metrics["preference_margin"] == pytest.approx(
        ours.metrics["preference_margin"], abs=1e-2
    )
    # and the adapter was applied: the base alone scores differently
    assert scored["base"].per_example != pytest.approx(ours.per_example, abs=1e-2)


def test_batched_loss_matches_the_model_own_loss_one_example_at_a_time(
    tiny_llama: Path, snapshot: Path, scored: dict[str, Evaluation]
) -> None:
    """Padding and masks change nothing: each per-example loss equals the mean completion
    NLL transformers computes for that example alone."""
    tokenizer = load_tokenizer(str(tiny_llama))
    model = load_causal_lm(str(tiny_llama)).eval()
    examples = read_examples(snapshot, "test")
    for (prompt, reply), batched in zip(
        examples.completions, scored["base"].per_example, strict=True
    ):
        head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        text = tokenizer.apply_chat_template(prompt + reply, tokenize=False)
        assert text.startswith(head)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        start = len(tokenizer(head, add_special_tokens=False)["input_ids"])
        labels = ids.clone()
        labels[:, :start] = -100
        with torch.inference_mode():
            alone = float(model(input_ids=ids, labels=labels).loss)
        assert batched == pytest.approx(alone, abs=1e-4)


def test_primary_comes_from_the_argument_then_the_snapshot_then_auto(
    tmp_path: Path, snapshot: Path, snapshot_writer: Callable[..., Path], make_row: Any
) -> None:
    examples = read_examples(snapshot, "test")
    assert choose_primary(snapshot, None, examples) == "sft_loss"
    assert choose_primary(snapshot, "bleu", examples) == "bleu"
    chosen = tmp_path / "chosen"
    shutil.copytree(snapshot, chosen)
    meta = json.loads((chosen / "snapshot.json").read_text())
    (chosen / "snapshot.json").write_text(json.dumps({**meta, "primary_metric": "rouge_l"}))
    assert choose_primary(chosen, None, examples) == "rouge_l"
    assert choose_primary(chosen, "perplexity", examples) == "perplexity"
    pairs_only = snapshot_writer(
        tmp_path / "pairs",
        {"dpo": [make_row("where is my invoice", "test", chosen=ANSWER, rejected=OTHER)]},
    )
    assert choose_primary(pairs_only, None, read_examples(pairs_only, "test")) == (
        "preference_accuracy"
    )
    with pytest.raises(Invalid, match="unknown metric"):
        choose_primary(snapshot, "accuracy", examples)


def test_a_primary_the_split_cannot_give_is_refused(
    tmp_path: Path, tiny_llama: Path, snapshot_writer: Callable[..., Path], make_row: Any
) -> None:
    pairs_only = snapshot_writer(
        tmp_path / "pairs",
        {"dpo": [make_row("where is my invoice", "test", chosen=ANSWER, rejected=OTHER)]},
    )
    with pytest.raises(Invalid, match="sft_loss"):
        evaluate(str(tiny_llama), pairs_only, primary="sft_loss")


def test_an_empty_split_is_refused(tiny_llama: Path, snapshot: Path) -> None:
    with pytest.raises(Invalid, match="validation split has no rows"):
        evaluate(str(tiny_llama), snapshot, "validation")


def test_pickle_only_weights_are_refused_at_evaluation(
    tmp_path: Path, tiny_llama: Path, snapshot: Path
) -> None:
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_llama, pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    with pytest.raises(Invalid, match="safetensors"):
        evaluate(str(pickled), snapshot)


def test_similarities_score_identical_text_one_and_unrelated_text_lower() -> None:
    same = ["find the account and change the email"]
    other = ["the weather is cold in the north today"]
    for name, measure in SIMILARITIES.items():
        assert measure(same, same)[0] == pytest.approx(1.0, abs=1e-4), name
        assert measure(other, same)[0] < 0.5, name


def test_batched_greedy_generation_equals_one_prompt_at_a_time(
    adapter: Path, tiny_llama: Path
) -> None:
    """Left padding and masks change nothing: prompts of different lengths get the same
    greedy reply in one batch as alone."""
    tokenizer = load_tokenizer(str(tiny_llama))
    model = load_for_scoring(str(adapter))
    asks = ["where is my invoice", "can i cancel my plan and delete my account now please"]
    prompts = [
        tokenizer(
            prompt_text(tokenizer, [{"role": "user", "content": ask}]), add_special_tokens=False
        )["input_ids"]
        for ask in asks
    ]
    pad = tokenizer.pad_token_id
    together = generate(model, tokenizer, prompts, [12, 12], pad)
    alone = [generate(model, tokenizer, [prompt], [12], pad)[0] for prompt in prompts]
    assert together == alone
    assert all(reply for reply in together)  # the trained adapter answers something
    assert generate(model, tokenizer, prompts[:1], [2], pad)[0] != together[0]  # bounded


def test_a_thumbed_up_reply_in_sft_and_kto_is_one_example(
    tmp_path: Path,
    snapshot_writer: Callable[..., Path],
    make_row: Callable[..., dict[str, Any]],
) -> None:
    same = {"completion": ANSWER}
    rows = {
        "sft": [make_row("where is my invoice", "test", **same)],
        "kto": [make_row("where is my invoice", "test", **same, label=True)],
    }
    examples = read_examples(snapshot_writer(tmp_path / "s", rows), "test")
    assert len(examples.completions) == 1


def test_similarity_runs_on_a_bounded_share_unless_it_is_the_primary(
    tiny_llama: Path,
    tmp_path: Path,
    snapshot_writer: Callable[..., Path],
    make_row: Callable[..., dict[str, Any]],
) -> None:
    from fineloop.tasks.generation.evaluate import SIMILARITY_EXAMPLES

    many = [make_row(f"question number {i}", "test", completion=ANSWER) for i in range(20)]
    snap = snapshot_writer(tmp_path / "s", {"sft": many})
    by_loss = evaluate(str(tiny_llama), snap)
    assert by_loss.primary == "sft_loss" and len(by_loss.per_example) == 20
    assert by_loss.metrics["similarity_examples"] == SIMILARITY_EXAMPLES < 20
    by_rouge = evaluate(str(tiny_llama), snap, primary="rouge_l")
    assert len(by_rouge.per_example) == 20  # the gate pairs every example
    assert by_rouge.metrics["similarity_examples"] == 20
