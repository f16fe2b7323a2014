"""Import and export of items, interactions and feedback as JSONL, CSV or Parquet files."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import StringConstraints
from starlette.concurrency import run_in_threadpool

from fineloop.api.deps import Admin, StoreDep
from fineloop.api.limits import large_body
from fineloop.api.responses import CHANGE, KEYED
from fineloop.schemas import ImportReport
from fineloop.serving import feedback_changed, items_changed
from fineloop.store.projects import get_project
from fineloop.transfer.service import export_file, import_file

router = APIRouter(
    prefix="/v1/projects/{project}",
    tags=["import/export"],
    dependencies=[Admin],
    responses=KEYED,
)

ResourceName = Literal["items", "interactions", "feedback"]
# jsonl, csv, parquet, oasst, chat, or one the project's task family reads (ner: conll).
ImportFormat = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
ExportFormat = Literal["jsonl", "csv", "parquet"]
_MEDIA = {"jsonl": "application/x-ndjson", "csv": "text/csv", "parquet": "application/octet-stream"}
# The file is the raw body, so FastAPI cannot document it: say so in OpenAPI ourselves.
_FILE_BODY = {
    "requestBody": {
        "required": True,
        "description": "The file, as the raw body, in the `format` given.",
        "content": {
            media: {"schema": {"type": "string", "format": "binary"}}
            for media in sorted(set(_MEDIA.values()))
        },
    }
}
_FILE_ANSWER = {
    "description": "The rows as a file in the `format` asked for.",
    "content": {media: {} for media in sorted(set(_MEDIA.values()))},
}


@router.post("/import/{resource}", responses=CHANGE, openapi_extra=_FILE_BODY)
@large_body  # the whole file is the body: max_import_bytes, not max_request_bytes
async def import_rows(
    project: str,
    resource: ResourceName,
    request: Request,
    store: StoreDep,
    format: Annotated[ImportFormat, Query(description="File format of the request body.")],
) -> list[ImportReport]:
    """Send the file as the raw request body. All rows are stored, or none (422 with the
    line numbers of the bad rows). `format=oasst` takes an Open-Assistant tree file and
    `format=chat` a chat JSONL file (prompt/completion, messages or chosen/rejected lines);
    both import interactions and feedback together, as do the formats a task family adds
    (ner: `conll`, `spans-jsonl`)."""
    data = await request.body()
    reports = await run_in_threadpool(import_file, store, project, resource, data, format)
    if resource == "items":
        items_changed(request.app, project)
    else:
        feedback_changed(request.app, project)
    return reports


@router.get("/export/{resource}", response_class=StreamingResponse, responses={200: _FILE_ANSWER})
def export_rows(
    project: str,
    resource: ResourceName,
    store: StoreDep,
    format: Annotated[ExportFormat, Query()] = "jsonl",
) -> StreamingResponse:
    with store.read() as session:
        get_project(session, project)  # a 404 now, not a broken stream later
    return StreamingResponse(
        export_file(store, project, resource, format),
        media_type=_MEDIA[format],
        headers={"content-disposition": f'attachment; filename="{project}-{resource}.{format}"'},
    )
