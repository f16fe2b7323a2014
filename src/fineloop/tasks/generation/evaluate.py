"""Held-out metrics of a generation model (a full causal LM or a LoRA adapter folder).

On one split of the snapshot:
- completion rows (sft rows, and kto rows labelled desirable): `sft_loss`, the mean token
  NLL of the reference reply, and `perplexity` = exp(mean sft_loss);
- preference rows (dpo): `preference_accuracy`, 1 when the chosen reply's summed log-prob
  beats the rejected one's, and `preference_margin`, their difference;
- references (completion rows' replies, dpo rows' chosen replies): the greedy generation's
  `edit_ratio`, `rouge_l`, `bleu` and `embedding_cosine` to the reference — on the first
  SIMILARITY_EXAMPLES references unless one of them is the primary metric
  (`similarity_examples` says how many).

Examples keep the snapshot's order (sft, kto, then dpo rows, each in stored order), so
`per_example` of two models evaluated on the same split line up for the paired bootstrap.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fineloop.data.snapshot_io import load_split, read_meta
from fineloop.errors import Invalid
from fineloop.runtime import device
from fineloop.tasks.base import Evaluation
from fineloop.tasks.generation.config import METRICS
from fineloop.tasks.generation.eval_scoring import (
    budget,
    encode,
    generate,
    prompt_text,
    reply_logprobs,
)
from fineloop.tasks.generation.metrics import SIMILARITIES
from fineloop.tasks.generation.models import load_model, load_tokenizer, split_model

MAX_TOKENS = 2048  # prompt + reply tokens scored per example (cut from the left past it)
SAMPLES = 8  # greedy replies an evaluation keeps for people to read
# References generated for the similarity metrics when none of them is the primary: greedy
# generation is most of an evaluation's time (100 of 151 s for 26 SmolLM2 examples, twice),
# and the gate does not read them then. All of them when one is the primary.
SIMILARITY_EXAMPLES = 16
SAMPLE_CHARS = 600  # of each prompt turn, reference and reply kept with them

Messages = list[dict[str, str]]


@dataclass
class Examples:
    """The split's rows as the metrics need them, in a stable order."""

    completions: list[tuple[Messages, Messages]] = field(default_factory=list)
    pairs: list[tuple[Messages, Messages, Messages]] = field(default_factory=list)

    @property
    def references(self) -> list[tuple[Messages, Messages]]:
        return self.completions + [(prompt, chosen) for prompt, chosen, _ in self.pairs]


def read_examples(snapshot: Path, split: str) -> Examples:
    """The split's rows; a reply that is both an sft row and a desirable kto row (a
    thumbed-up reply is both) is one example, scored once."""
    found = Examples()
    seen: set[str] = set()

    def new(*parts: Messages) -> bool:
        key = json.dumps(parts, sort_keys=True)
        if key in seen:
            return False
        seen.add(key)
        return True

    for method in ("sft", "kto", "dpo"):
        folder = Path(snapshot) / method
        if not folder.exists():
            continue
        rows = load_split(folder, split)
        if method == "dpo":
            pairs = zip(rows["prompt"], rows["chosen"], rows["rejected"], strict=True)
            found.pairs += [pair for pair in pairs if new(*pair)]
            continue
        labels = rows["label"] if method == "kto" else [True] * len(rows)
        found.completions += [
            (prompt, reply)
            for prompt, reply, label in zip(rows["prompt"], rows["completion"], labels, strict=True)
            if label and new(prompt, reply)
        ]
    return found


def choose_primary(snapshot: Path, primary: str | None, examples: Examples) -> str:
    """The metric asked for, else the snapshot's, else sft_loss / preference_accuracy."""
    if primary is None or primary == "auto":
        primary = read_meta(snapshot).get("primary_metric") or "auto"
    if primary == "auto":
        return "sft_loss" if examples.completions else "preference_accuracy"
    if primary not in METRICS:
        raise Invalid(
            f"unknown metric {primary!r}; valid: auto, {', '.join(METRICS)}", field="primary"
        )
    return primary


def evaluate(
    model: str, snapshot: Path, split: str = "test", primary: str | None = None
) -> Evaluation:
    examples = read_examples(snapshot, split)
    require_rows(examples, split)
    chosen = choose_primary(snapshot, primary, examples)
    if chosen not in available(examples):  # refused before any model is loaded
        raise Invalid(
            f"primary metric {chosen!r} cannot be computed on the {split} split "
            f"(it has {len(examples.completions)} completion rows, {len(examples.pairs)} "
            "preference pairs)",
            field="primary",
        )
    replies: list[str] = []
    most = None if chosen in SIMILARITIES else SIMILARITY_EXAMPLES
    per = per_example(model, examples, split, similarity=True, replies=replies, references=most)
    metrics = aggregate(per, examples)
    metrics["similarity_examples"] = float(len(replies))
    return Evaluation(
        metrics=metrics,
        primary=chosen,
        per_example=per[chosen],
        higher_is_better=METRICS[chosen],
        samples=samples(examples, replies),
    )


def samples(examples: Examples, replies: list[str]) -> list[dict[str, Any]]:
    """The first greedy replies next to their prompts and references, for people to read
    (the dashboard's side by side); texts cut at SAMPLE_CHARS so a version record stays
    small."""
    rows = []
    for (prompt, reference), reply in zip(examples.references[:SAMPLES], replies, strict=False):
        turns = [{"role": m["role"], "content": m["content"][:SAMPLE_CHARS]} for m in prompt]
        rows.append(
            {
                "input": {"messages": turns},
                "reference": reference[-1]["content"][:SAMPLE_CHARS],
                "output": reply[:SAMPLE_CHARS],
            }
        )
    return rows


def require_rows(examples: Examples, split: str) -> None:
    if not examples.completions and not examples.pairs:
        raise Invalid(f"the snapshot's {split} split has no rows to evaluate on", field="snapshot")


def available(examples: Examples) -> set[str]:
    """The metrics these examples allow."""
    found: set[str] = set()
    if examples.completions:
        found |= {"sft_loss", "perplexity"}
    if examples.pairs:
        found |= {"preference_accuracy", "preference_margin"}
    if examples.references:
        found |= set(SIMILARITIES)
    return found


def likelihood_metrics(model: str, snapshot: Path, split: str = "test") -> dict[str, float]:
    """sft_loss, perplexity and the preference metrics alone: no generation, so a quick
    check (a search trial, a test) pays only for forward passes."""
    examples = read_examples(snapshot, split)
    return aggregate(per_example(model, examples, split, similarity=False), examples)


def per_example(
    model: str,
    examples: Examples,
    split: str,
    *,
    similarity: bool,
    replies: list[str] | None = None,
    references: int | None = None,
) -> dict[str, list[float]]:
    """Every metric per example, in the examples' order; the greedy replies (one per
    reference) are appended to `replies` when given. `references`: the similarity metrics
    on the first that many references only."""
    require_rows(examples, split)
    base, _ = split_model(model)
    tokenizer = load_tokenizer(base)
    lm = load_for_scoring(model)
    pad = tokenizer.pad_token_id
    limit = min(MAX_TOKENS, getattr(lm.config, "max_position_embeddings", MAX_TOKENS))
    per: dict[str, list[float]] = {}

    if examples.completions:
        scored = reply_logprobs(
            lm, [encode(tokenizer, p, r, limit) for p, r in examples.completions], pad
        )
        per["sft_loss"] = [-total / max(count, 1) for total, count in scored]
        per["perplexity"] = [math.exp(loss) for loss in per["sft_loss"]]
    if examples.pairs:
        pairs = examples.pairs
        good = reply_logprobs(lm, [encode(tokenizer, p, c, limit) for p, c, _ in pairs], pad)
        bad = reply_logprobs(lm, [encode(tokenizer, p, r, limit) for p, _, r in pairs], pad)
        margins = [g[0] - b[0] for g, b in zip(good, bad, strict=True)]
        per["preference_margin"] = margins
        per["preference_accuracy"] = [1.0 if m > 0 else 0.0 for m in margins]
    if not similarity:
        return per

    shown = examples.references[:references]
    texts = [reply[-1]["content"] for _, reply in shown]
    prompts = [
        tokenizer(prompt_text(tokenizer, p), add_special_tokens=False)["input_ids"][-limit:]
        for p, _ in shown
    ]
    generated = generate(lm, tokenizer, prompts, [budget(tokenizer, t) for t in texts], pad)
    if replies is not None:
        replies.extend(generated)
    for name, measure in SIMILARITIES.items():
        per[name] = measure(generated, texts)
    return per


def load_for_scoring(model: str) -> Any:
    """The model in eval mode on the device, an adapter merged into its base (one matmul
    per layer instead of two when generating). fp32 on a CPU, so two models' scores differ
    by their weights, not by rounding; the checkpoint's own dtype on a GPU."""
    import torch

    where = device()
    lm = load_model(model, dtype=torch.float32 if where == "cpu" else None)
    if hasattr(lm, "merge_and_unload"):
        lm = lm.merge_and_unload()
    return lm.to(where).eval()


def aggregate(per: dict[str, list[float]], examples: Examples) -> dict[str, float]:
    metrics = {name: mean(values) for name, values in per.items()}
    if "sft_loss" in metrics:  # perplexity of the mean loss, not the mean of perplexities
        metrics["perplexity"] = math.exp(metrics["sft_loss"])
    metrics.update(counts(examples))
    return metrics


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def counts(examples: Examples) -> dict[str, float]:
    return {
        "completion_examples": float(len(examples.completions)),
        "preference_examples": float(len(examples.pairs)),
    }
