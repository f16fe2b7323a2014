"""Import a file into a project (all or nothing) and export a project's rows."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from fineloop.errors import BatchRejected, Invalid, RowError, error_message, field_path
from fineloop.feedback.events import EventEnvelope
from fineloop.feedback.ingest import ingest
from fineloop.schemas import ImportReport, InteractionCreate, ItemIn
from fineloop.store import Store
from fineloop.store.interactions import existing_interactions, log_interactions
from fineloop.store.items import existing_item_ids, upsert_items
from fineloop.store.projects import get_project, policy_of
from fineloop.store.schema import Project
from fineloop.tasks import get_task
from fineloop.transfer import chat, oasst
from fineloop.transfer.formats import FORMATS, read_rows, write_rows
from fineloop.transfer.records import LAYOUTS, RESOURCES, export_rows, parse

Progress = Callable[[int, int], None]
# Formats that hold interactions and feedback together, each read by its converter.
CONVERTERS: dict[str, Callable[[bytes], tuple[list[InteractionCreate], list[EventEnvelope]]]] = {
    "oasst": oasst.convert,
    "chat": chat.convert,
}
_CHUNK = 5_000


def import_file(
    store: Store,
    project: str,
    resource: str,
    data: bytes,
    fmt: str,
    progress: Progress | None = None,
) -> list[ImportReport]:
    """Validate every row first, then store them all in one transaction.

    `fmt="oasst"` reads an Open-Assistant tree file and `fmt="chat"` a chat JSONL file
    (prompt/completion, messages, preference pairs), and imports their interactions and
    feedback together (see `fineloop.transfer.oasst` and `fineloop.transfer.chat`); so do
    the formats the project's task family adds (`Task.converters`)."""
    with store.read() as session:
        task = get_project(session, project).task
    converters = {**CONVERTERS, **get_task(task).converters()}
    if fmt in converters:
        interactions, events = converters[fmt](data)
        with store.write() as session:
            found = get_project(session, project)
            return [
                _store(session, found, "interactions", interactions, progress),
                _store(session, found, "feedback", events, progress),
            ]
    if fmt not in FORMATS:
        known = ", ".join([*FORMATS, *sorted(converters)])
        raise Invalid(f"unknown format {fmt!r}; use one of {known}", field="format")
    if resource not in RESOURCES:
        raise Invalid(f"unknown resource {resource!r}; use one of {', '.join(RESOURCES)}")
    parsed: list[Any] = []
    lines: list[int] = []
    errors: list[RowError] = []
    for index, (line, row) in enumerate(read_rows(data, fmt)):
        try:
            parsed.append(parse(resource, row))
            lines.append(line)
        except ValidationError as error:
            errors += [
                RowError(index, field_path(e["loc"], e["type"]) or "row", error_message(e), line)
                for e in error.errors()
            ]
    if errors:
        raise BatchRejected(errors, total=len(parsed) + len({e.row for e in errors}))
    with store.write() as session:
        found = get_project(session, project)
        return [_store(session, found, resource, parsed, progress, lines)]


def _store(
    session: Session,
    project: Project,
    resource: str,
    rows: list[Any],
    progress: Progress | None,
    lines: list[int] | None = None,
) -> ImportReport:
    total = len(rows)
    created = total
    for start in range(0, total, _CHUNK):
        chunk = rows[start : start + _CHUNK]
        if resource == "items":
            typed_items = _typed(chunk, ItemIn)
            present = existing_item_ids(session, project.id, [i.id for i in typed_items])
            created -= sum(item.id in present for item in typed_items)
            upsert_items(session, project.id, typed_items)
        elif resource == "interactions":
            typed = _typed(chunk, InteractionCreate)
            known = existing_interactions(session, project.id, [i.id for i in typed if i.id])
            created -= len(known)
            log_interactions(session, project.id, typed)
        else:
            try:
                stored = ingest(session, project, _typed(chunk, EventEnvelope))
            except BatchRejected as rejected:
                raise _shifted(rejected, start, total, lines) from None
            created -= sum(not s.created for s in stored)
        if progress is not None:
            progress(min(start + _CHUNK, total), total)
    return ImportReport(resource=resource, rows=total, created=created, duplicates=total - created)


def _typed(rows: list[Any], kind: type[Any]) -> list[Any]:
    if not all(isinstance(row, kind) for row in rows):
        raise TypeError(f"expected {kind.__name__} rows")
    return rows


def _shifted(
    rejected: BatchRejected, offset: int, total: int, lines: list[int] | None
) -> BatchRejected:
    """A chunk's errors, renumbered relative to the whole file, with line numbers."""
    errors = [
        RowError(e.row + offset, e.field, e.message, lines[e.row + offset] if lines else None)
        for e in rejected.errors
    ]
    return BatchRejected(errors, total=total)


def export_file(store: Store, project: str, resource: str, fmt: str) -> Iterator[bytes]:
    if resource not in RESOURCES:
        raise Invalid(f"unknown resource {resource!r}; use one of {', '.join(RESOURCES)}")
    with store.read() as session:
        found = get_project(session, project)
        rows = export_rows(session, found.id, resource, policy_of(found))
        yield from write_rows(rows, fmt, LAYOUTS[resource].columns)
