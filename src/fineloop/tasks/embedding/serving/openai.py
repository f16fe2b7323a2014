"""`POST /v1/embeddings`, shaped like OpenAI's embeddings API, over a project's model.

`model` names the project, optionally with a version or alias: "faq", "faq:champion",
"faq:v3". Errors use OpenAI's body (fineloop.api.openai_errors).

Cost is bounded before any tokenizing: at most `max_embedding_inputs` texts and
`max_embedding_chars` characters per request (422 beyond), and each text is cut to what the
model can read (16 characters per token of its max_seq_length, see predict.py).
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, JsonValue, WithJsonSchema
from starlette.concurrency import run_in_threadpool

from fineloop.api.deps import require
from fineloop.api.openai_errors import OPENAI_RESPONSES, answer_openai, json_body
from fineloop.config import Settings
from fineloop.errors import Invalid, NotFound
from fineloop.serving.versions import served_version
from fineloop.tasks.embedding.serving.state import TASK, embedding_serving
from fineloop.validation import INPUT

router = APIRouter(tags=["openai-compatible"])
_check_key = require("ingest")


class EmbeddingsRequest(BaseModel):
    model_config = INPUT  # strict: `dimensions: true` is not 1

    # Any JSON is read so that a wrong type gets OpenAI's error body; the document says
    # what is taken (inline: an OpenAPI document has no $defs for a $ref to point at).
    input: Annotated[
        JsonValue,
        WithJsonSchema(
            {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
        ),
    ] = Field(description="A string or a list of strings to embed.")
    model: str = Field(
        min_length=1, max_length=140, description='"project" or "project:version-or-alias".'
    )
    encoding_format: Literal["float", "base64"] = Field(
        default="float", description="float arrays, or base64 of little-endian float32."
    )
    dimensions: int | None = Field(
        default=None,
        ge=1,
        le=65_536,
        description="Keep the first n dimensions, renormalized (Matryoshka).",
    )
    user: str | None = Field(default=None, max_length=256, description="End-user id; unused.")


@router.post(
    "/v1/embeddings",
    responses=OPENAI_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EmbeddingsRequest.model_json_schema()}},
        }
    },
)
async def embeddings(request: Request) -> Response:
    """Embed texts with the project's champion (or the named version)."""

    async def work() -> JSONResponse:
        _check_key(request)
        body = EmbeddingsRequest.model_validate(await json_body(request))
        return JSONResponse(await run_in_threadpool(_embed, request.app, body))

    return await answer_openai(work)


def _texts(value: JsonValue, settings: Settings) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise Invalid("input is empty; send a string or a non-empty list of strings", field="input")
    if any(_is_tokens(i) for i in items):
        raise Invalid(
            "token arrays are not supported: send the text itself (this endpoint tokenizes "
            "with the model's own tokenizer)",
            field="input",
        )
    if not all(isinstance(i, str) for i in items):
        raise Invalid("input must be a string or a list of strings", field="input")
    texts = [str(i) for i in items]
    most = settings.max_embedding_inputs
    if len(texts) > most:
        raise Invalid(
            f"{len(texts)} inputs; at most {most} per request (max_embedding_inputs): "
            "split them over several requests",
            field="input",
        )
    for index, text in enumerate(texts):
        if not text:
            raise Invalid(f"input[{index}] is an empty string", field="input")
    chars, budget = sum(map(len, texts)), settings.max_embedding_chars
    if chars > budget:
        raise Invalid(
            f"the inputs have {chars} characters together; at most {budget} per request "
            "(max_embedding_chars): split them over several requests",
            field="input",
        )
    return texts


def _is_tokens(value: JsonValue) -> bool:
    """An int (a token id) or a non-empty list of them: OpenAI's pre-tokenized input."""
    if isinstance(value, list):
        return bool(value) and all(_is_tokens(v) and not isinstance(v, list) for v in value)
    return isinstance(value, int) and not isinstance(value, bool)


def _embed(app: Any, body: EmbeddingsRequest) -> dict[str, Any]:
    texts = _texts(body.input, app.state.settings)
    name, _, ref = body.model.partition(":")
    try:
        project, version = served_version(app.state.store, name, ref or None, task=TASK)
    except NotFound as error:
        raise NotFound(error.message, field="model") from error
    predictor = embedding_serving(app).ready_predictor(version)
    vectors = predictor.encode(texts)
    if body.dimensions is not None:
        if body.dimensions > predictor.dimension:
            raise Invalid(
                f"dimensions {body.dimensions} exceeds the model's {predictor.dimension}",
                field="dimensions",
            )
        vectors = vectors[:, : body.dimensions]
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    tokens = sum(predictor.count_tokens(texts))
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encoded(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "model": f"{project.name}:{version.label}",
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _encoded(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
