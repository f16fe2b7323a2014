"""Errors a user can act on. The API turns each into a 4xx JSON body; the CLI prints it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class FineloopError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        return body


class NotFound(FineloopError):
    status = 404
    code = "not_found"


class Conflict(FineloopError):
    status = 409
    code = "conflict"


class Invalid(FineloopError):
    status = 422
    code = "invalid"


class BadFile(Invalid):
    """A file that cannot be parsed; `line` is 1-based (Parquet: the row number)."""

    def __init__(self, line: int | None, problem: str, *, field: str = "file") -> None:
        super().__init__(f"line {line}: {problem}" if line is not None else problem, field=field)
        self.line = line

    def body(self) -> dict[str, Any]:
        body = super().body()
        if self.line is not None:
            body["line"] = self.line
        return body


class TooLarge(FineloopError):
    status = 413
    code = "too_large"


class NotReady(FineloopError):
    """Not ready yet (an index building, a model loading): nothing was done, so the same
    request may be sent again after `retry_after` seconds. `progress` says how far along."""

    status = 503
    code = "not_ready"

    def __init__(
        self, message: str, *, retry_after: int, progress: dict[str, Any], field: str | None = None
    ) -> None:
        super().__init__(message, field=field)
        self.retry_after = max(1, int(retry_after))
        self.progress = progress

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}

    def body(self) -> dict[str, Any]:
        return super().body() | {"retry_after": self.retry_after, "progress": self.progress}


class Unauthorized(FineloopError):
    status = 401
    code = "unauthorized"


class Forbidden(FineloopError):
    status = 403
    code = "forbidden"


KIND_TAGS = frozenset({"thumb", "rating", "correction", "selection", "preference", "label"})


def error_message(error: Mapping[str, Any]) -> str:
    """A pydantic error's message without the "Value error, " pydantic puts before what a
    validator raised: users read the reason, not the exception class."""
    message = str(error.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


def field_path(loc: tuple[object, ...] | list[object], error_type: str = "") -> str:
    """A pydantic error location as a dotted field name, without the union's kind tag."""
    if error_type.startswith("union_tag"):
        return "kind"
    parts = [str(p) for p in loc]
    if parts and parts[0] in KIND_TAGS:
        parts = parts[1:]
    return ".".join(parts)


def validated(model: type[M], values: Any, prefix: str = "") -> M:
    """`values` as a `model`; the first problem becomes one `Invalid` naming the field
    (`prefix` + its dotted path, e.g. "train.lr") in its message and its `field`."""
    try:
        return model.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        name = prefix + field_path(first["loc"], first["type"])
        raise Invalid(f"{name}: {error_message(first)}", field=name) from None


@dataclass(frozen=True)
class RowError:
    """One problem in one row of a batch or file; `row` is 0-based, `line` 1-based."""

    row: int
    field: str
    message: str
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"row": self.row, "field": self.field, "message": self.message}
        if self.line is not None:
            out["line"] = self.line
        return out


class BatchRejected(Invalid):
    """A batch in which some rows are invalid: nothing of it was stored."""

    code = "invalid_rows"

    def __init__(self, errors: list[RowError], *, total: int) -> None:
        first = errors[0]
        where = f"line {first.line}" if first.line is not None else f"row {first.row}"
        super().__init__(
            f"{len(errors)} invalid row(s) of {total}; nothing was stored. "
            f"First: {where}, {first.field}: {first.message}"
        )
        self.errors = errors

    def body(self) -> dict[str, Any]:
        body = super().body()
        body["invalid_rows"] = [error.as_dict() for error in self.errors[:1000]]
        return body
