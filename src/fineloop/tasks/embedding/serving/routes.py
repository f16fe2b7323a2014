"""Search and select over an embedding project's items, and its score calibration."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from fineloop.api.deps import Admin, Ingest
from fineloop.api.responses import BODY, BUSY, KEYED
from fineloop.tasks.embedding.serving.schemas import (
    SearchRequest,
    SearchResponse,
    SelectRequest,
    SelectResponse,
)
from fineloop.tasks.embedding.serving.service import search, select
from fineloop.tasks.embedding.serving.slot import Slot
from fineloop.tasks.embedding.serving.state import TASK, EmbeddingServing, embedding_serving

router = APIRouter(prefix="/v1/projects/{project}", tags=["serving"], responses={**KEYED, **BUSY})


def _serving(request: Request) -> EmbeddingServing:
    return embedding_serving(request.app)


ServingDep = Annotated[EmbeddingServing, Depends(_serving)]


@router.post("/search", dependencies=[Ingest], responses=BODY)
def search_items(project: str, body: SearchRequest, serving: ServingDep) -> SearchResponse:
    """The k best items for the query, each with its cosine `score` and calibrated
    `probability`; logs the interaction (attach feedback to `interaction_id`)."""
    return search(serving, project, body)


@router.post("/select", dependencies=[Ingest], responses=BODY)
def select_items(project: str, body: SelectRequest, serving: ServingDep) -> SelectResponse:
    """Every item whose probability reaches the threshold (at most `max`), plus the next
    best candidates a user may pick from; logs the candidates as the shown items."""
    return select(serving, project, body)


@router.get("/index", dependencies=[Ingest])
def index_status(project: str, serving: ServingDep) -> dict[str, Any]:
    """The project's indexes in this server: per version its state (queued, loading_model,
    indexing, ready, failed; not_built for a champion nothing was started for), items
    embedded of the total, and seconds spent. Searches answer 503 until one is ready."""
    return serving.status(project)


@router.post("/index", dependencies=[Admin], status_code=202)
def build_index(project: str, serving: ServingDep, version: str | None = None) -> dict[str, Any]:
    """Start building the version's index (default: the champion) in the background, unless
    it is built or building; answers the status as `GET .../index` does."""
    return serving.build(project, version)


@router.get("/calibration", dependencies=[Admin])
def show_calibration(
    project: str, serving: ServingDep, version: str | None = None
) -> dict[str, Any]:
    """The calibration the version (default: champion) serves with."""
    served = serving.hub.serve(project, version, task=TASK)
    slot: Slot = served.resource
    return {"model_version": served.version.label, **slot.calibrator.public()}


@router.post("/calibration", dependencies=[Admin])
def refit_calibration(
    project: str, serving: ServingDep, version: str | None = None
) -> dict[str, Any]:
    """Refit the calibration on all judged feedback now, store it and serve with it."""
    served = serving.hub.serve(project, version, task=TASK)
    fitted = serving.refit(served)
    return {"model_version": served.version.label, **fitted.public()}
