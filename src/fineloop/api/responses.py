"""The error answers each route can give, as OpenAPI `responses=` mappings.

FastAPI documents only a route's success and its own 422 shape (which is not ours: every
error leaves as `ErrorBody`, see fineloop.api.errors). Routers and routes spread these
mappings into `responses=` so that /openapi.json lists every 4xx a client must handle, and
the fuzzer (tests/api/test_fuzz_openapi.py) fails on any status a route answers without
saying so.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Responses = dict[int | str, dict[str, Any]]


class ErrorBody(BaseModel):
    """What every fineloop error answers: a code, a sentence that says what to fix, and
    where relevant the field, the line of a file, or the invalid rows of a batch."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description='A stable code: "invalid", "not_found", "conflict", ...')
    message: str = Field(description="What went wrong and what to change.")
    field: str | None = Field(default=None, description="The field at fault, dotted.")


class OpenAIErrorDetail(BaseModel):
    message: str = Field(description="What went wrong and what to change.")
    type: str = Field(description='e.g. "invalid_request_error", "authentication_error".')
    param: str | None = Field(default=None, description="The field at fault.")
    code: str | None = Field(default=None, description='e.g. "invalid", "model_not_found".')


class OpenAIErrorBody(BaseModel):
    """The error body of the OpenAI-compatible routes, as OpenAI's clients expect it."""

    error: OpenAIErrorDetail


_WHY = {
    400: "The request cannot be served as sent (e.g. a host name this server does not answer).",
    401: "No API key, or an unknown or revoked one, while keys are configured.",
    403: "The key's scope does not allow this route, or a browser request from another site.",
    404: "The project, or the thing named in the path, does not exist.",
    409: "The change conflicts with the current state (e.g. a job already running).",
    413: "The request body is larger than this server takes.",
    415: "The body's Content-Type is not one this route reads.",
    422: "A field, parameter or row is invalid; the body says which and why.",
    429: "Too many failed attempts from this client; wait before retrying.",
    503: "Not ready yet (e.g. the index is being built); retry after `Retry-After` seconds.",
}


def errors(*codes: int, model: type[BaseModel] = ErrorBody) -> Responses:
    """`responses=` entries for these status codes, each with its error body and why."""
    return {code: {"model": model, "description": _WHY[code]} for code in codes}


# Every route: a Host header this server does not answer.
ANY = errors(400)
# Any route behind an API key.
KEY = errors(400, 401, 403, 429)
# Any route behind an API key, under a project or naming a record in its path or query.
KEYED = {**KEY, **errors(404, 422)}
# Routes that read a JSON (or file) body.
BODY = errors(413, 415)
# Routes that change state without a body (cancel, end a rollout).
CONFLICT = errors(409)
# Routes that change state from a body.
CHANGE = {**CONFLICT, **BODY}
# Routes that serve a model: the index or model may still be loading or building.
BUSY = errors(503)
