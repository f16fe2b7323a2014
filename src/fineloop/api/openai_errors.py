"""OpenAI-shaped errors for the OpenAI-compatible routes of every family
(`/v1/embeddings`, `/v1/chat/completions`): {"error": {"message", "type", "param", "code"}},
so OpenAI clients report them as they would OpenAI's own. The HTTP status stays fineloop's
(404 unknown model, 422 invalid request, 401/403 keys, 503 with Retry-After while a model
loads)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from fineloop.api.responses import ErrorBody, OpenAIErrorBody, Responses, errors
from fineloop.errors import FineloopError, Invalid, NotReady, field_path

# The route's own errors use OpenAI's body; the guard, the body limit and the throttle in
# front of it answer with fineloop's.
OPENAI_RESPONSES: Responses = {
    **errors(400, 413),
    **errors(401, 404, 422, 503, model=OpenAIErrorBody),
    **errors(403, 415, 429, model=ErrorBody | OpenAIErrorBody),  # type: ignore[arg-type]
}

_KINDS = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    503: "server_error",
}


def openai_error(status: int, message: str, param: str | None, code: str) -> JSONResponse:
    body = {
        "error": {
            "message": message,
            "type": _KINDS.get(status, "invalid_request_error"),
            "param": param,
            "code": "model_not_found" if status == 404 else code,
        }
    }
    return JSONResponse(body, status_code=status)


async def json_body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError as error:
        raise Invalid(f"the body is not valid JSON: {error}", field="body") from error


async def answer_openai(work: Callable[[], Awaitable[Response]]) -> Response:
    """Run the route's work; fineloop's errors and validation errors become OpenAI's body."""
    try:
        return await work()
    except NotReady as error:
        response = openai_error(error.status, error.message, error.field, error.code)
        response.headers.update(error.headers)
        return response
    except FineloopError as error:
        return openai_error(error.status, error.message, error.field, error.code)
    except ValidationError as error:
        first = error.errors()[0]
        where = field_path(list(first["loc"]), first["type"]) or "body"
        return openai_error(422, f"{where}: {first['msg']}", where, "invalid")
