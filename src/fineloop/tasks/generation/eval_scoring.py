"""What a causal LM says about given replies: completion log-probs and greedy generations.

Both run in batches of similar length (padding plus attention masks) under
`torch.inference_mode()`, and return results in the order of their input.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

TOKENS_PER_BATCH = 2048  # bounds the logits: 2048 x 49k vocabulary x 4 B = 0.4 GB
MAX_BATCH = 16
NEW_TOKENS_MARGIN = 16  # a generation may run this far past its reference's length
NEW_TOKENS_CAP = 256


@dataclass(frozen=True)
class Encoded:
    """Token ids of prompt + reply; the reply starts at `start`."""

    ids: list[int]
    start: int


def prompt_text(tokenizer: Any, prompt: list[dict[str, str]]) -> str:
    text: str = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return text


def encode(
    tokenizer: Any, prompt: list[dict[str, str]], reply: list[dict[str, str]], limit: int
) -> Encoded:
    """The chat template over prompt + reply, tokenized; the reply is what follows the
    prompt's own tokens (with the template's end-of-turn). Cut from the left past `limit`."""
    head = tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    full_text = tokenizer.apply_chat_template(prompt + reply, tokenize=False)
    ids: list[int] = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    start = 0
    while start < min(len(head), len(ids)) and head[start] == ids[start]:
        start += 1  # the shared prefix: the template may render the prompt's end differently
    start = min(start, len(ids) - 1)
    cut = max(0, len(ids) - limit)
    return Encoded(ids[cut:], max(1, start - cut))


def batches(lengths: list[int]) -> Iterator[list[int]]:
    """Indices grouped by similar length (longest first), within the token budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    for index in order:
        longest = lengths[batch[0]] if batch else lengths[index]
        if (batch and (len(batch) + 1) * longest > TOKENS_PER_BATCH) or len(batch) == MAX_BATCH:
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


def reply_logprobs(model: Any, examples: list[Encoded], pad_id: int) -> list[tuple[float, int]]:
    """Per example: (summed log-prob of the reply tokens, number of reply tokens)."""
    device = next(model.parameters()).device
    results: list[tuple[float, int]] = [(0.0, 0)] * len(examples)
    with torch.inference_mode():
        for batch in batches([len(e.ids) for e in examples]):
            width = max(len(examples[i].ids) for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for row, index in enumerate(batch):
                example = examples[index]
                n = len(example.ids)
                ids[row, :n] = torch.tensor(example.ids)
                mask[row, :n] = 1
                labels[row, example.start : n] = ids[row, example.start : n]
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            shifted = labels[:, 1:].to(device)
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().transpose(1, 2), shifted, reduction="none"
            )
            counts = (shifted != -100).sum(dim=1)
            for row, index in enumerate(batch):
                results[index] = (-float(nll[row].sum()), int(counts[row]))
    return results


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    budgets: list[int],
    pad_id: int,
) -> list[str]:
    """Greedy replies to each prompt (token ids), at most `budgets[i]` new tokens each."""
    device = next(model.parameters()).device
    replies = [""] * len(prompts)
    eos = model.generation_config.eos_token_id or tokenizer.eos_token_id
    with torch.inference_mode():
        for batch in batches([len(p) + b for p, b in zip(prompts, budgets, strict=True)]):
            width = max(len(prompts[i]) for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, index in enumerate(batch):  # left padding: replies start aligned
                n = len(prompts[index])
                ids[row, width - n :] = torch.tensor(prompts[index])
                mask[row, width - n :] = 1
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max(budgets[i] for i in batch),
                do_sample=False,
                pad_token_id=pad_id,
                eos_token_id=eos,
            )
            for row, index in enumerate(batch):
                new = out[row, width : width + budgets[index]]
                replies[index] = tokenizer.decode(new, skip_special_tokens=True).strip()
    return replies


def budget(tokenizer: Any, reference: str) -> int:
    """New tokens allowed for a reply: the reference's length plus a margin, capped."""
    length = len(tokenizer(reference, add_special_tokens=False)["input_ids"])
    return min(NEW_TOKENS_CAP, length + NEW_TOKENS_MARGIN)
