"""Turning a request into prompt token ids that fit the model's context.

A chat is rendered with the tokenizer's own chat template (`add_generation_prompt=True`); a
plain prompt is used as is by a model without one and sent as a user message otherwise (as
the training data builder does). When prompt + max_tokens exceed the context, the policy
decides: "reject" raises `Invalid` with both numbers, "truncate" keeps the leading system
messages and the latest turns, dropping the oldest (a kept conversation starts at a user
turn), then cuts the start of the last message, and as a last resort keeps the prompt's
last tokens. It never fails for length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fineloop.errors import Invalid
from fineloop.tasks.generation.predict_io import ContextPolicy, GenerationInput

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Message = dict[str, str]


@dataclass(frozen=True)
class FittedPrompt:
    ids: list[int]
    max_new_tokens: int
    truncated: bool


def fit_prompt(
    tokenizer: PreTrainedTokenizerBase,
    request: GenerationInput,
    *,
    context: int,
    max_new_tokens: int,
    policy: ContextPolicy,
) -> FittedPrompt:
    """The prompt ids and the tokens left to generate, within `context` tokens."""
    messages = _messages(tokenizer, request)
    ids = _encode(tokenizer, messages, request.prompt)
    if len(ids) + max_new_tokens <= context:
        return FittedPrompt(ids, max_new_tokens, truncated=False)
    if policy == "reject":
        raise Invalid(
            f"the prompt has {len(ids)} tokens and max_tokens is {max_new_tokens}: together "
            f"more than the model's context of {context} tokens; shorten the conversation or "
            "lower max_tokens (or ask for context_policy truncate)",
            field="messages" if request.messages is not None else "prompt",
        )
    # keep at least half the context for the prompt; the reply gets what is left
    budget = max(context - max_new_tokens, context // 2)
    if messages is not None:
        ids = _fit_messages(tokenizer, messages, budget)
    ids = ids[-budget:]  # last resort: what is nearest to the reply
    return FittedPrompt(ids, min(max_new_tokens, context - len(ids)), truncated=True)


def _messages(tokenizer: PreTrainedTokenizerBase, request: GenerationInput) -> list[Message] | None:
    """The chat to render, or None for a plain prompt used as is."""
    if request.messages is not None:
        if not tokenizer.chat_template:
            raise Invalid(
                "this model has no chat template: send a plain prompt instead of messages",
                field="messages",
            )
        return [{"role": m.role, "content": m.content} for m in request.messages]
    if tokenizer.chat_template:
        return [{"role": "user", "content": request.prompt or ""}]
    return None


def _encode(
    tokenizer: PreTrainedTokenizerBase, messages: list[Message] | None, prompt: str | None
) -> list[int]:
    if messages is None:
        return list(tokenizer(prompt or "")["input_ids"])
    try:
        text: Any = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
    except Exception as error:  # jinja's TemplateError: a template that checks the roles
        raise Invalid(
            f"the model's chat template refuses these messages: {error}", field="messages"
        ) from None
    # the template writes its own special tokens (a BOS where the model wants one)
    return list(tokenizer(str(text), add_special_tokens=False)["input_ids"])


def _fit_messages(
    tokenizer: PreTrainedTokenizerBase, messages: list[Message], budget: int
) -> list[int]:
    """The longest tail of the conversation (after its system messages) that fits."""
    lead = 0
    while lead < len(messages) - 1 and messages[lead]["role"] == "system":
        lead += 1
    system, turns = messages[:lead], messages[lead:]

    def encoded(start: int) -> list[int]:
        return _encode(tokenizer, system + turns[start:], None)

    # fewest dropped turns that fit: dropping more never makes the prompt longer
    low, high = 1, len(turns) - 1
    best: list[int] | None = None
    while low <= high:
        middle = (low + high) // 2
        ids = encoded(middle)
        if len(ids) <= budget:
            best, high = ids, middle - 1
        else:
            low = middle + 1
    if best is not None:
        start = low
        while start < len(turns) - 1 and turns[start]["role"] == "assistant":
            start += 1  # a kept conversation starts with a user turn
        return best if start == low else encoded(start)
    return _cut_last(tokenizer, system, turns[-1], budget)


def _cut_last(
    tokenizer: PreTrainedTokenizerBase, system: list[Message], last: Message, budget: int
) -> list[int]:
    """Only the last message is left and it is too long: keep the end of its text."""
    content = list(tokenizer(last["content"], add_special_tokens=False)["input_ids"])
    ids = _encode(tokenizer, [*system, last], None)
    for _ in range(3):  # re-tokenizing a cut text can differ by a token or two
        over = len(ids) - budget
        if over <= 0 or over >= len(content):
            break
        content = content[over + 2 :]
        kept = {"role": last["role"], "content": str(tokenizer.decode(content))}
        ids = _encode(tokenizer, [*system, kept], None)
    return ids
