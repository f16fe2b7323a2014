"""The generation calls of `Client`: `generate` and the OpenAI-shaped `chat`.

Both log an interaction on the server and answer its id (`interaction_id`); attach the
user's answer to it (`client.thumb`, `client.correct` with the reply it should have
been, `client.send_feedback` for a preference). Like search
they are not retried once sent (a repeat would log the interaction twice), except after a
503 with Retry-After (the model is loading; nothing was logged).

    reply = client.generate("assistant", prompt="Name a colour.", max_tokens=16)
    client.thumb("assistant", reply["interaction_id"], up=True)

    with client.chat("assistant", messages, stream=True) as stream:
        for piece in stream:
            print(piece, end="")
    client.thumb("assistant", stream.interaction_id, up=False)
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, overload

import httpx

from fineloop.sdk.transport import Transport, encode, error_of, project_path

INTERACTION_HEADER = "x-fineloop-interaction-id"
Messages = Sequence[Mapping[str, Any]]


class ChatStream:
    """The text of a streamed chat completion, piece by piece as the model writes it.

    `interaction_id` is known at once; `finish_reason` and `usage` (with
    `stream_options={"include_usage": True}`) once the stream has ended. Close it (or
    iterate to the end, or use it as a context manager) to free the connection."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.interaction_id: str | None = response.headers.get(INTERACTION_HEADER)
        self.model: str | None = None
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self._events = _events(response)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        for event in self._events:
            self.model = event.get("model", self.model)
            if event.get("usage"):
                self.usage = event["usage"]
            for choice in event.get("choices") or []:
                self.finish_reason = choice.get("finish_reason") or self.finish_reason
                text = (choice.get("delta") or {}).get("content")
                if text:
                    return str(text)
        self.close()
        raise StopIteration

    @property
    def text(self) -> str:
        """The rest of the reply, read to the end."""
        return "".join(self)

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON payloads of a server-sent event stream, up to `[DONE]`."""
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, comments, other fields
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        yield json.loads(data)


class GenerationCalls:
    _t: Transport

    def generate(
        self,
        project: str,
        messages: Messages | None = None,
        prompt: str | None = None,
        *,
        version: str | int | None = None,
        user_id: str | None = None,
        **sampling: Any,
    ) -> dict[str, Any]:
        """The reply to a conversation (`messages`: [{"role", "content"}, ...]) or a plain
        `prompt`: `text`, `finish_reason`, `truncated`, `usage`, the `interaction_id` and the
        `model_version` that answered. `sampling`: max_tokens, temperature (default 0:
        greedy), top_p, stop, seed, context_policy."""
        body: dict[str, Any] = dict(sampling)
        if messages is not None:
            body["messages"] = [dict(m) for m in messages]
        if prompt is not None:
            body["prompt"] = prompt
        if version is not None:
            body["version"] = str(version)
        if user_id is not None:
            body["user_id"] = user_id
        return self._t.obj("POST", f"{project_path(project)}/generate", body=body)

    @overload
    def chat(
        self,
        project: str,
        messages: Messages,
        *,
        version: str | int | None = None,
        stream: Literal[False] = False,
        **params: Any,
    ) -> dict[str, Any]: ...

    @overload
    def chat(
        self,
        project: str,
        messages: Messages,
        *,
        version: str | int | None = None,
        stream: Literal[True],
        **params: Any,
    ) -> ChatStream: ...

    def chat(
        self,
        project: str,
        messages: Messages,
        *,
        version: str | int | None = None,
        stream: bool = False,
        **params: Any,
    ) -> dict[str, Any] | ChatStream:
        """A chat completion through `/v1/chat/completions` (OpenAI's shape and defaults:
        temperature 1). `params`: max_tokens, temperature, top_p, stop, seed, user,
        stream_options. With `stream=True`, a `ChatStream` of text pieces."""
        model = project if version is None else f"{project}:{version}"
        body = dict(params) | {"model": model, "messages": [dict(m) for m in messages]}
        if not stream:
            return self._t.obj("POST", "/v1/chat/completions", body=body)
        body["stream"] = True
        return ChatStream(self._t.waiting(lambda: self._open_stream(body)))

    def _open_stream(self, body: dict[str, Any]) -> httpx.Response:
        """The streamed response once its status is known (an error raised, body read)."""

        def attempt() -> httpx.Response:
            request = self._t.http.build_request(
                "POST",
                "/v1/chat/completions",
                content=encode(body),
                headers={"content-type": "application/json"},
            )
            response = self._t.http.send(request, stream=True)
            if response.is_error:
                response.read()
                response.close()
                raise error_of(response)
            return response

        return self._t.retrying(attempt, idempotent=False)
