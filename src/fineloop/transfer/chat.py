"""Chat JSONL (prompt/completion, OpenAI messages, preference pairs) → interactions and
feedback: a cold start for a generation project from data a team already has.

The mapping (documented in the README), one JSON object per line:
- `{"prompt": str, "completion": str}` → an interaction with input `{"prompt": …}` and
  output `{"text": completion}`, plus a thumb-up on it (a known-good answer: an SFT row and
  a desirable KTO row when built);
- `{"messages": [{"role", "content"}, …]}` (OpenAI chat fine-tuning format) whose last
  message is the assistant's reply → an interaction with input `{"messages": <the turns
  before the reply>}` and output `{"text": reply}`, plus a thumb-up;
- `{"prompt": str | messages, "chosen": str, "rejected": str}` → a preference event with
  the prompt as `input` and the sides as `{"text": …}` (a DPO pair when built).
A prompt may be a string or a message list, a reply a string or a one-message assistant
list (TRL's conversational shape). Interactions get metadata `{"source": "import"}`.
Interaction ids and idempotency keys are content hashes, so a second import of the same
file (or a line repeated) stores nothing new.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from fineloop.data.hashing import content_hash
from fineloop.errors import BadFile
from fineloop.feedback.events import EventEnvelope, FeedbackEvent
from fineloop.schemas import InteractionCreate
from fineloop.transfer.formats import check_text, json_line

_EVENT = TypeAdapter[EventEnvelope](FeedbackEvent)
_ROLES = ("system", "user", "assistant")
_SOURCE = {"source": "import"}
_SHAPES = (
    'each line needs {"prompt", "completion"}, {"messages": [...]} or '
    '{"prompt", "chosen", "rejected"}'
)


def convert(data: bytes) -> tuple[list[InteractionCreate], list[EventEnvelope]]:
    interactions: dict[str, InteractionCreate] = {}
    events: dict[str, EventEnvelope] = {}
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        row = json_line(number, raw)
        if not isinstance(row, dict):
            raise BadFile(number, f"expected a JSON object; {_SHAPES}")
        check_text(number, row)
        if "chosen" in row or "rejected" in row:
            event = _preference(number, row)
            events.setdefault(event.idempotency_key or "", event)
            continue
        interaction = _example(number, row)
        assert interaction.id is not None
        interactions.setdefault(interaction.id, interaction)
        thumb = _EVENT.validate_python(
            {
                "kind": "thumb",
                "value": "up",
                "interaction_id": interaction.id,
                "idempotency_key": f"{interaction.id}:up",
                "metadata": _SOURCE,
            }
        )
        events.setdefault(thumb.idempotency_key or "", thumb)
    return list(interactions.values()), list(events.values())


def _example(number: int, row: dict[str, Any]) -> InteractionCreate:
    """A prompt/completion or chat line as the interaction it records."""
    if "messages" in row:
        _only(number, row, {"messages"})
        messages = _messages(number, row["messages"], "messages")
        if messages[-1]["role"] != "assistant":
            raise BadFile(
                number,
                "the last message must be the assistant's reply (role 'assistant'), "
                f"not {messages[-1]['role']!r}",
                field="messages",
            )
        prompt: dict[str, Any] = {"messages": _ask(number, messages[:-1], "messages")}
        text = messages[-1]["content"]
    elif "prompt" in row and "completion" in row:
        _only(number, row, {"prompt", "completion"})
        prompt = _prompt(number, row["prompt"])
        text = _reply(number, row["completion"], "completion")
    else:
        raise BadFile(number, _SHAPES)
    output = {"text": text}
    return InteractionCreate(
        id="chat-" + content_hash({"input": prompt, "output": output})[:40],
        input=prompt,
        output=output,
        metadata=_SOURCE,
    )


def _preference(number: int, row: dict[str, Any]) -> EventEnvelope:
    _only(number, row, {"prompt", "chosen", "rejected"})
    for needed in ("prompt", "chosen", "rejected"):
        if needed not in row:
            raise BadFile(number, f"a preference line needs {needed!r}", field=needed)
    prompt = _prompt(number, row["prompt"])
    chosen = _reply(number, row["chosen"], "chosen")
    rejected = _reply(number, row["rejected"], "rejected")
    if chosen.strip() == rejected.strip():
        raise BadFile(
            number,
            "chosen and rejected are the same text; a pair needs two answers",
            field="chosen",
        )
    pair = {"input": prompt, "chosen": {"text": chosen}, "rejected": {"text": rejected}}
    return _EVENT.validate_python(
        {
            "kind": "preference",
            **pair,
            "idempotency_key": "chat-pref-" + content_hash(pair)[:40],
            "metadata": _SOURCE,
        }
    )


def _only(number: int, row: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(row) - allowed)
    if unknown:
        raise BadFile(
            number,
            f"unknown key {unknown[0]!r} beside {sorted(allowed)}; {_SHAPES}",
            field=unknown[0],
        )


def _prompt(number: int, value: Any) -> dict[str, Any]:
    """A prompt as an interaction input: `{"prompt": str}` or `{"messages": [...]}`."""
    if isinstance(value, str):
        if not value.strip():
            raise BadFile(number, "the prompt is empty", field="prompt")
        return {"prompt": value}
    if isinstance(value, list):
        return {"messages": _ask(number, _messages(number, value, "prompt"), "prompt")}
    raise BadFile(number, "prompt must be a string or a list of messages", field="prompt")


def _ask(number: int, messages: list[dict[str, str]], field: str) -> list[dict[str, str]]:
    """The turns before a reply: they must end with the user's question."""
    if not messages or messages[-1]["role"] != "user":
        raise BadFile(
            number, "the turns before the reply must end with a user message", field=field
        )
    return messages


def _messages(number: int, value: Any, field: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise BadFile(number, f"{field} must be a non-empty list of messages", field=field)
    messages = []
    for index, message in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(message, dict):
            raise BadFile(number, f"{where} must be an object with role and content", field=field)
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES:
            raise BadFile(
                number, f"{where}.role must be one of {list(_ROLES)}, not {role!r}", field=field
            )
        if not isinstance(content, str):
            raise BadFile(number, f"{where}.content must be a string", field=field)
        messages.append({"role": str(role), "content": content})
    if not messages[-1]["content"].strip():
        raise BadFile(number, f"{field}[{len(messages) - 1}] has empty content", field=field)
    return messages


def _reply(number: int, value: Any, field: str) -> str:
    text = value
    one = isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)
    if one and value[0].get("role") == "assistant":
        text = value[0].get("content")
    if not isinstance(text, str):
        raise BadFile(
            number,
            f"{field} must be a string (or one assistant message), not {type(value).__name__}",
            field=field,
        )
    if not text.strip():
        raise BadFile(number, f"{field} is empty", field=field)
    return text
