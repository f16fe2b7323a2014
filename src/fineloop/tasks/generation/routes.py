"""The API routes the generation family adds: `POST /v1/projects/{p}/generate` and the
OpenAI-compatible `POST /v1/chat/completions` (streaming and not).

Both go through the shared serving: `route` picks the version (named, rollout variant or
champion; the model loads in the background, 503 + Retry-After meanwhile) and
`log_interaction` stores the prompt and the reply with the version and variant that wrote
it, so thumbs, corrections and preferences attach to the interaction id the response
carries (`interaction_id`; for chat completions also the `id` "chatcmpl-<interaction id>"
and the `x-fineloop-interaction-id` header).

`model` of a chat completion names the project, optionally with a version or alias:
"assistant", "assistant:champion", "assistant:v3". OpenAI's defaults hold (temperature 1);
parameters fineloop does not implement are ignored, except `n` above 1 (422).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from fineloop.api.deps import Ingest, require
from fineloop.api.openai_errors import OPENAI_RESPONSES, answer_openai, json_body
from fineloop.api.responses import BODY, BUSY, KEYED
from fineloop.errors import NotFound
from fineloop.rollouts.routing import Routed, route
from fineloop.serving import get_serving
from fineloop.serving.interactions import log_interaction
from fineloop.tasks.generation.adapt import AdaptedInfo
from fineloop.tasks.generation.predict_io import (
    MAX_INPUT_CHARS,
    MAX_MESSAGES,
    MAX_STOPS,
    MAX_TOKENS_LIMIT,
    ChatMessage,
    GenerationInput,
    GenerationOutput,
)
from fineloop.tasks.generation.serving import AdaptedRequest, adapt_request
from fineloop.tasks.generation.task import TASK
from fineloop.validation import INPUT, Seed

router = APIRouter()
_check_key = require("ingest")


class GenerateRequest(GenerationInput):
    version: str | None = Field(
        default=None, max_length=64, description="A version or alias; default: routed."
    )
    user_id: str | None = Field(
        default=None, max_length=256, description="Who asked: sticky rollout assignment."
    )


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class GenerateResponse(BaseModel):
    interaction_id: str = Field(description="Attach feedback to this id.")
    model_version: str
    variant: str | None
    text: str
    finish_reason: str
    truncated: bool
    usage: Usage
    adapted: AdaptedInfo | None = Field(
        default=None, description="Set when a correction answered or informed the reply."
    )


@router.post(
    "/v1/projects/{project}/generate",
    dependencies=[Ingest],
    tags=["serving"],
    responses={**KEYED, **BODY, **BUSY},
)
def generate(project: str, body: GenerateRequest, request: Request) -> GenerateResponse:
    """The reply of the routed version to `messages` or a `prompt`; logs the interaction."""
    started = time.perf_counter()
    routed = _route(request.app, project, body.version, body.user_id)
    asked = GenerationInput.model_validate(body.model_dump(exclude={"version", "user_id"}))
    adapted = adapt_request(request.app, routed.served, asked)
    output = adapted.answer(routed.served.resource)
    interaction_id = _log(request.app, routed, adapted, output, "generate", body.user_id, started)
    return GenerateResponse(
        interaction_id=interaction_id,
        model_version=routed.served.version.label,
        variant=routed.variant,
        text=output.text,
        finish_reason=output.finish_reason,
        truncated=output.truncated,
        usage=_usage(output),
        adapted=adapted.adapted.public(),
    )


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    type: Literal["text"]
    text: str = Field(max_length=MAX_INPUT_CHARS)


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] = Field(description="Text, or a list of text parts.")

    def plain(self) -> ChatMessage:
        text = (
            self.content
            if isinstance(self.content, str)
            else "".join(part.text for part in self.content)
        )
        role = "system" if self.role == "developer" else self.role
        return ChatMessage(role=role, content=text)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request, as far as fineloop implements it."""

    model_config = ConfigDict(**{**INPUT, "extra": "ignore"})

    model: str = Field(
        min_length=1, max_length=140, description='"project" or "project:version-or-alias".'
    )
    messages: list[OpenAIMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = Field(default=None)
    seed: Seed | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1, description="Only one choice is generated.")
    user: str | None = Field(default=None, max_length=256, description="End-user id.")

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings")
        return value

    def generation_input(self) -> GenerationInput:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        sampling: dict[str, Any] = {
            "temperature": 1.0 if self.temperature is None else self.temperature,
            "top_p": 1.0 if self.top_p is None else self.top_p,
            "seed": self.seed,
            "stop": stop,
        }
        most = self.max_completion_tokens or self.max_tokens
        if most is not None:
            sampling["max_tokens"] = most
        messages = [m.plain() for m in self.messages]
        return GenerationInput(messages=messages, **sampling)


@router.post(
    "/v1/chat/completions",
    tags=["openai-compatible"],
    responses=OPENAI_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ChatCompletionRequest.model_json_schema()}},
        }
    },
)
async def chat_completions(request: Request) -> Response:
    """A chat completion by the project's routed version; `stream: true` answers with
    server-sent events (`chat.completion.chunk` objects, then `[DONE]`)."""

    async def work() -> Response:
        _check_key(request)
        body = ChatCompletionRequest.model_validate(await json_body(request))
        asked = body.generation_input()
        name, _, ref = body.model.partition(":")
        started = time.perf_counter()
        try:
            routed = await run_in_threadpool(_route, request.app, name, ref or None, body.user)
        except NotFound as error:
            raise NotFound(error.message, field="model") from error
        adapted = await run_in_threadpool(adapt_request, request.app, routed.served, asked)
        interaction_id = uuid.uuid4().hex
        headers = {"x-fineloop-interaction-id": interaction_id}
        if body.stream:
            chunks = _stream(request.app, routed, adapted, body, interaction_id, started)
            first = await run_in_threadpool(next, chunks)  # context errors: before any byte
            return StreamingResponse(
                _prepend(first, chunks), media_type="text/event-stream", headers=headers
            )
        output = await run_in_threadpool(adapted.answer, routed.served.resource)
        _log(
            request.app,
            routed,
            adapted,
            output,
            "chat.completions",
            body.user,
            started,
            interaction_id,
        )
        completion = _completion(routed, output, interaction_id, adapted)
        return JSONResponse(completion, headers=headers)

    return await answer_openai(work)


def _route(app: Any, project: str, version: str | None, user_id: str | None) -> Routed:
    return route(get_serving(app), project, version, user_id, task=TASK)


def _stream(
    app: Any,
    routed: Routed,
    adapted: AdaptedRequest,
    body: ChatCompletionRequest,
    interaction_id: str,
    started: float,
) -> Iterator[bytes]:
    """SSE frames: the role, the text as it comes, the finish reason, usage if asked.
    The interaction is logged once the reply is whole (a client gone early logs none)."""
    stream = adapted.stream(routed.served.resource)  # raises context errors now
    head = _chunk_head(routed, interaction_id) | _adapted_field(adapted)
    yield _event(head | {"choices": [_delta({"role": "assistant", "content": ""})]})
    try:
        for piece in stream:
            yield _event(head | {"choices": [_delta({"content": piece})]})
    finally:
        stream.close()
    output = stream.output
    if output is None:  # closed before the end
        return
    _log(app, routed, adapted, output, "chat.completions", body.user, started, interaction_id)
    yield _event(head | {"choices": [_delta({}, output.finish_reason)]})
    if body.stream_options is not None and body.stream_options.include_usage:
        yield _event(head | {"choices": [], "usage": _usage(output).model_dump()})
    yield b"data: [DONE]\n\n"


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _chunk_head(routed: Routed, interaction_id: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{interaction_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": _model_name(routed),
        "system_fingerprint": None,
    }


def _delta(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


def _event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def _completion(
    routed: Routed, output: GenerationOutput, interaction_id: str, adapted: AdaptedRequest
) -> dict[str, Any]:
    return _adapted_field(adapted) | {
        "id": f"chatcmpl-{interaction_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": _model_name(routed),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": output.text, "refusal": None},
                "logprobs": None,
                "finish_reason": output.finish_reason,
            }
        ],
        "usage": _usage(output).model_dump(),
        "system_fingerprint": None,
        "interaction_id": interaction_id,
        "model_version": routed.served.version.label,
        "variant": routed.variant,
        "truncated": output.truncated,
    }


def _adapted_field(adapted: AdaptedRequest) -> dict[str, Any]:
    """`adapted` for a reply a correction answered or informed; nothing otherwise."""
    info = adapted.adapted.public()
    return {} if info is None else {"adapted": info.model_dump(exclude_none=True)}


def _model_name(routed: Routed) -> str:
    return f"{routed.served.project.name}:{routed.served.version.label}"


def _usage(output: GenerationOutput) -> Usage:
    total = output.prompt_tokens + output.completion_tokens
    return Usage(
        prompt_tokens=output.prompt_tokens,
        completion_tokens=output.completion_tokens,
        total_tokens=total,
    )


def _log(
    app: Any,
    routed: Routed,
    adapted: AdaptedRequest,
    output: GenerationOutput,
    endpoint: str,
    user_id: str | None,
    started: float,
    interaction_id: str | None = None,
) -> str:
    """The interaction as generation builders read it: input {"messages"} or {"prompt"},
    output {"text"} plus how the reply ended; an adapted reply adds output["adapted"] and
    any few-shot examples as input["shots"], apart from the user's messages."""
    asked = adapted.asked
    if asked.messages is not None:
        shown: dict[str, Any] = {"messages": [m.model_dump() for m in asked.messages]}
    else:
        shown = {"prompt": asked.prompt}
    reply: dict[str, Any] = {"text": output.text, "finish_reason": output.finish_reason}
    if output.truncated:
        reply["truncated"] = True
    reply |= _adapted_field(adapted)
    if adapted.adapted.shots:
        shown["shots"] = adapted.adapted.shots_logged()
    return log_interaction(
        app.state.store,
        routed,
        input=shown,
        output=reply,
        endpoint=endpoint,
        user_id=user_id,
        started=started,
        interaction_id=interaction_id,
    )
