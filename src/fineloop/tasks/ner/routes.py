"""The API route the NER family adds: `POST /v1/projects/{project}/extract`.

It goes through the shared serving: `route` picks the version (named, rollout variant or
champion; the model loads in the background, 503 + Retry-After meanwhile), the family's
serving merges the model's spans with the project's gazetteer (serving.py), and each text
is logged as one interaction: input {"text"} (plus "document" when given), output
{"spans"}, so a label or correction attaches to the `interaction_id` of its result.

One text (`text`) or a batch (`texts`) answers the same shape: `results`, one per text in
order. A batch is bounded in count and characters (422 beyond), and is logged in one
write.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, model_validator

from fineloop.api.deps import Ingest
from fineloop.api.responses import BODY, BUSY, KEYED
from fineloop.errors import Invalid
from fineloop.rollouts.routing import route
from fineloop.serving import get_serving
from fineloop.serving.interactions import log_interactions
from fineloop.tasks.ner.serving import ner_serving
from fineloop.tasks.ner.spans import MAX_TEXT_CHARS
from fineloop.tasks.ner.task import TASK
from fineloop.validation import INPUT, JsonObject

MAX_TEXTS = 256
MAX_BATCH_CHARS = 200_000  # all texts of one request together
MAX_DOCUMENT_CHARS = 256

Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Document = Annotated[str, Field(min_length=1, max_length=MAX_DOCUMENT_CHARS)]

router = APIRouter()


class ExtractRequest(BaseModel):
    """One text or a batch of texts, and where to log them."""

    model_config = INPUT

    text: str | None = Field(
        default=None, max_length=MAX_TEXT_CHARS, description="One text to find entities in."
    )
    texts: list[Text] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TEXTS,
        description=f"Several texts (at most {MAX_TEXTS}, {MAX_BATCH_CHARS} characters in "
        "all); one result and one interaction each.",
    )
    document: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_DOCUMENT_CHARS,
        description="The document `text` comes from: texts of one document stay in one "
        "split when the project trains.",
    )
    documents: list[Document] | None = Field(
        default=None, description="One document per entry of `texts` (same length)."
    )
    version: str | None = Field(
        default=None, max_length=64, description="A version or alias; default: routed."
    )
    user_id: str | None = Field(
        default=None, max_length=256, description="Who asked: sticky rollout assignment."
    )
    metadata: JsonObject = Field(
        default_factory=dict, description="Kept with each logged interaction."
    )

    @model_validator(mode="after")
    def _shape(self) -> ExtractRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of text or texts")
        if self.document is not None and self.text is None:
            raise ValueError("document goes with text; give documents with texts")
        if self.documents is not None and len(self.documents) != len(self.texts or [None]):
            raise ValueError("documents needs texts, one document per text")
        return self

    def inputs(self) -> list[dict[str, str]]:
        """The logged input of each text: {"text"} plus "document" when given."""
        texts = [self.text] if self.text is not None else list(self.texts or [])
        documents = [self.document] if self.text is not None else list(self.documents or [])
        documents += [None] * (len(texts) - len(documents))
        return [
            {"text": t} if d is None else {"text": t, "document": d}
            for t, d in zip(texts, documents, strict=True)
        ]


class ExtractedSpan(BaseModel):
    start: int = Field(description="Character offset where the span starts.")
    end: int = Field(description="Character offset just past the span.")
    label: str = Field(description="The entity type.")
    score: float = Field(description="The model's confidence; a memory span's is fixed.")
    text: str = Field(description="The span's text.")
    source: str = Field(
        description='"model", or "memory": a form users marked, found by the gazetteer.'
    )
    feedback_id: int | None = Field(
        default=None, description="For a memory span: the feedback that taught it."
    )


class ExtractResult(BaseModel):
    interaction_id: str = Field(description="Attach a label or correction to this id.")
    spans: list[ExtractedSpan]


class ExtractResponse(BaseModel):
    results: list[ExtractResult] = Field(description="One per text, in the request's order.")
    model_version: str
    variant: str | None


@router.post(
    "/v1/projects/{project}/extract",
    dependencies=[Ingest],
    tags=["serving"],
    responses={**KEYED, **BODY, **BUSY},
)
def extract(project: str, body: ExtractRequest, request: Request) -> ExtractResponse:
    """The entity spans the routed version finds in `text` or each of `texts`; logs one
    interaction per text."""
    started = time.perf_counter()
    inputs = body.inputs()
    total = sum(len(i["text"]) for i in inputs)
    if total > MAX_BATCH_CHARS:
        raise Invalid(
            f"the texts hold {total} characters; one request takes at most "
            f"{MAX_BATCH_CHARS} (send several)",
            field="texts",
        )
    routed = route(get_serving(request.app), project, body.version, body.user_id, task=TASK)
    served = routed.served
    texts = [i["text"] for i in inputs]
    found = ner_serving(request.app).extract(served.project, served.resource, texts)
    ids = log_interactions(
        request.app.state.store,
        routed,
        [(shown, {"spans": spans}) for shown, spans in zip(inputs, found, strict=True)],
        endpoint="extract",
        user_id=body.user_id,
        started=started,
        metadata=body.metadata,
    )
    return ExtractResponse(
        results=[
            ExtractResult(interaction_id=i, spans=[ExtractedSpan(**s) for s in spans])
            for i, spans in zip(ids, found, strict=True)
        ],
        model_version=served.version.label,
        variant=routed.variant,
    )
