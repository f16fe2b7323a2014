"""Every error leaves as JSON that names the field and the problem; never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, StatementError
from starlette.exceptions import HTTPException as StarletteHTTPException

from fineloop.errors import FineloopError, error_message, field_path

log = logging.getLogger("fineloop.api")
_COLLECTIONS = ("events", "items", "interactions")


def install(app: FastAPI) -> None:
    app.add_exception_handler(FineloopError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for unstorable in (OverflowError, RecursionError, StatementError):
        app.add_exception_handler(unstorable, _unstorable_value)
    app.add_exception_handler(Exception, _unexpected_error)


async def _domain_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, FineloopError)
    headers = getattr(error, "headers", None)  # NotReady: Retry-After
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


async def _validation_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = [_problem(e) for e in error.errors()]
    rows = [p for p in problems if "row" in p]
    first = problems[0] if problems else {"field": "body", "message": "invalid request"}
    body: dict[str, Any] = {
        "error": "invalid",
        "message": f"{first['field']}: {first['message']}",
        "errors": problems[:1000],
    }
    if rows:
        body["error"] = "invalid_rows"
        body["message"] = (
            f"{len({p['row'] for p in rows})} invalid row(s); nothing was stored. "
            f"First: row {rows[0]['row']}, {rows[0]['field']}: {rows[0]['message']}"
        )
        body["invalid_rows"] = rows[:1000]
    return JSONResponse(body, status_code=422)


def _problem(error: Any) -> dict[str, Any]:
    loc: Sequence[Any] = error.get("loc", ())
    if error.get("type") == "json_invalid":  # loc is ("body", character offset)
        reason = (error.get("ctx") or {}).get("error", "")
        return {"field": "body", "message": f"invalid JSON at character {loc[-1]}: {reason}"}
    if loc and loc[0] in ("body", "query", "path", "header"):
        where, loc = loc[0], loc[1:]
    else:
        where = "body"
    problem: dict[str, Any] = {"message": error_message(error)}
    if len(loc) >= 2 and loc[0] in _COLLECTIONS and isinstance(loc[1], int):
        problem["row"] = loc[1]
        loc = loc[2:]
    problem["field"] = field_path(list(loc), str(error.get("type", ""))) or where
    if where != "body":
        problem["in"] = where
    return problem


async def _http_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
    code = codes.get(error.status_code, "http_error")
    return JSONResponse(
        {"error": code, "message": str(error.detail)},
        status_code=error.status_code,
        headers=getattr(error, "headers", None),
    )


async def _unstorable_value(_request: Request, error: Exception) -> JSONResponse:
    """Values that pass validation but not the database: dates that leave years 1..9999 in
    UTC, integers past 64 bits, NUL characters or NaN on PostgreSQL, absurdly nested JSON."""
    cause = error.orig if isinstance(error, StatementError) else error
    if isinstance(error, StatementError) and not (
        isinstance(error, DataError) or isinstance(cause, OverflowError)
    ):
        raise error  # a server-side fault: on to the 500 handler
    reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
    return JSONResponse(
        {"error": "invalid", "message": f"a value in the request cannot be stored: {reason}"},
        status_code=422,
    )


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse(
        {"error": "internal", "message": "unexpected server error; it was logged"},
        status_code=500,
    )
