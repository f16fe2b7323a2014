"""Reading prompts and outputs of a generation project into TRL's conversational shapes.

Interactions store `input` as `{"messages": [...]}` (chat) or `{"prompt": str}` (plain) and
`output` as `{"text": str}`; feedback may carry a bare string instead (a correction's
`output`, a preference's `chosen`). Everything here accepts those shapes and says None for
anything else, so the builder can count what it could not read rather than guess.
"""

from __future__ import annotations

from typing import Any

from fineloop.data.hashing import content_hash
from fineloop.data.splits import normalize_query

ROLES = frozenset({"system", "user", "assistant"})
Message = dict[str, str]


def prompt_messages(value: Any) -> list[Message] | None:
    """The conversation up to the reply, as `[{"role", "content"}, ...]`.

    A plain prompt (`{"prompt": str}` or a bare string) becomes one user turn. None when the
    value is no prompt, a message is malformed, or the last turn is not the user's (the
    reply must answer the user).
    """
    if isinstance(value, dict):
        if "messages" in value:
            messages = value["messages"]
        elif "prompt" in value:
            return prompt_messages(value["prompt"])
        else:
            return None
    elif isinstance(value, str):
        messages = [{"role": "user", "content": value}]
    else:
        messages = value
    if not isinstance(messages, list) or not messages:
        return None
    cleaned: list[Message] = []
    for message in messages:
        if not isinstance(message, dict):
            return None
        role, content = message.get("role"), message.get("content")
        if role not in ROLES or not isinstance(content, str):
            return None
        cleaned.append({"role": role, "content": content})
    if cleaned[-1]["role"] != "user" or not cleaned[-1]["content"].strip():
        return None
    return cleaned


def output_text(value: Any) -> str | None:
    """The text of an output: a bare string, `{"text": str}`, or a one-message assistant
    list (TRL's completion shape). None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        text: str = value["text"]
        return text
    if (
        isinstance(value, list)
        and len(value) == 1
        and isinstance(value[0], dict)
        and value[0].get("role") == "assistant"
        and isinstance(value[0].get("content"), str)
    ):
        content: str = value[0]["content"]
        return content
    return None


def reply(text: str) -> list[Message]:
    """A completion, chosen or rejected side in TRL's conversational shape."""
    return [{"role": "assistant", "content": text}]


def prompt_key(messages: list[Message]) -> str:
    """The split group of a prompt: prompts equal up to case, punctuation and whitespace
    share a key, so paraphrase-free duplicates never straddle train and test."""
    return content_hash([[m["role"], normalize_query(m["content"])] for m in messages])


def prompt_chars(messages: list[Message]) -> int:
    return sum(len(m["content"]) for m in messages)
