"""Open-Assistant message trees → interactions, thumbs and preferences.

The mapping (documented in the README):
- every assistant reply becomes an interaction: its id is the message id, its input the
  conversation up to the reply (`{"messages": [{"role", "content"}, …]}`), its output
  `{"text": reply}`, and its metadata the tree id, parent id, rank, language and whether
  the reply was model-written;
- each "+1" on a reply becomes a thumb-up event and each "-1" a thumb-down event (the tree
  stores counts, so one event per count, keyed `oasst:<message>:up:<n>`);
- replies ranked among their siblings give one preference per pair of different ranks,
  the better-ranked (lower `rank`) chosen: `oasst:<chosen>><rejected>`.
Red flags, skips and feedback on prompter messages are not imported. Idempotency keys make
a second import of the same file store nothing new.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from pydantic import TypeAdapter

from fineloop.errors import BadFile
from fineloop.feedback.events import EventEnvelope, FeedbackEvent
from fineloop.schemas import InteractionCreate
from fineloop.transfer.formats import check_text, json_line

_EVENT = TypeAdapter[EventEnvelope](FeedbackEvent)
_ROLES = {"prompter": "user", "assistant": "assistant"}


def convert(data: bytes) -> tuple[list[InteractionCreate], list[EventEnvelope]]:
    interactions: list[InteractionCreate] = []
    events: list[EventEnvelope] = []
    for number, tree in _trees(data):
        root = tree.get("prompt")
        if not isinstance(root, dict):
            raise BadFile(number, "an OASST tree needs a 'prompt' message")
        for message, history in _walk(root, []):
            if message.get("role") == "assistant":
                interactions.append(_interaction(tree, message, history))
                events += _thumbs(message)
            events += _preferences(message, history)
    return interactions, events


def _trees(data: bytes) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        tree = json_line(number, raw)
        if not isinstance(tree, dict):
            raise BadFile(number, "expected one message tree per line")
        check_text(number, tree)
        yield number, tree


def _walk(
    message: dict[str, Any], history: list[dict[str, str]]
) -> Iterator[tuple[dict[str, Any], list[dict[str, str]]]]:
    """Each message with the conversation that led to it (not including it)."""
    yield message, history
    turn = {"role": _ROLES.get(message.get("role", ""), "user"), "content": message["text"]}
    for reply in message.get("replies", []):
        yield from _walk(reply, [*history, turn])


def _interaction(
    tree: dict[str, Any], message: dict[str, Any], history: list[dict[str, str]]
) -> InteractionCreate:
    return InteractionCreate(
        id=message["message_id"],
        input={"messages": history},
        output={"text": message["text"]},
        model_version=message.get("model_name"),
        metadata={
            "source": "oasst",
            "tree_id": tree.get("message_tree_id"),
            "parent_id": message.get("parent_id"),
            "rank": message.get("rank"),
            "lang": message.get("lang"),
            "synthetic": bool(message.get("synthetic")),
        },
    )


def _thumbs(message: dict[str, Any]) -> list[EventEnvelope]:
    emojis = message.get("emojis") or {}
    events: list[EventEnvelope] = []
    for emoji, value in (("+1", "up"), ("-1", "down")):
        for n in range(int(emojis.get(emoji, 0))):
            events.append(
                _EVENT.validate_python(
                    {
                        "kind": "thumb",
                        "value": value,
                        "interaction_id": message["message_id"],
                        "idempotency_key": f"oasst:{message['message_id']}:{value}:{n}",
                        "metadata": {"source": "oasst"},
                    }
                )
            )
    return events


def _preferences(parent: dict[str, Any], history: list[dict[str, str]]) -> list[EventEnvelope]:
    ranked = [
        r
        for r in parent.get("replies", [])
        if r.get("role") == "assistant" and r.get("rank") is not None
    ]
    events: list[EventEnvelope] = []
    for a, b in itertools.combinations(sorted(ranked, key=lambda r: r["rank"]), 2):
        if a["rank"] == b["rank"]:
            continue
        events.append(
            _EVENT.validate_python(
                {
                    "kind": "preference",
                    "chosen_interaction_id": a["message_id"],
                    "rejected_interaction_id": b["message_id"],
                    "input": {"messages": [*history, {"role": "user", "content": parent["text"]}]},
                    "idempotency_key": f"oasst:{a['message_id']}>{b['message_id']}",
                    "metadata": {"source": "oasst", "ranks": [a["rank"], b["rank"]]},
                }
            )
        )
    return events
