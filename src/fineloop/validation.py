"""Shared input types: what every request model uses so bad values stop at the edge.

Why strict: pydantic's lax mode turns `true` into 1 and `false` into 0.0, so a boolean sent
for a number was stored as a rating of 1 or a threshold that selects everything. Request
models take `INPUT` (strict types, unknown keys refused) and these annotated types:

- bounded integers: anything stored must fit a signed 64-bit column and the JSON encoder
  the index uses (orjson), or it is accepted once and breaks every later read;
- `Json` / `JsonObject`: free-form JSON (metadata, filters, overrides) walked once, refusing
  integers beyond 64 bits, NaN/Infinity and nesting deeper than `MAX_DEPTH`, with the path
  of the bad value in the message;
- `Timestamp`: ISO 8601 strings (strict mode alone refuses strings for datetimes in the
  Python-mode validation FastAPI runs), naive times read as UTC.

What is already stored is read with `read_stored`, which is lenient and logs instead of
failing: an old row must not take down every listing of a project.
"""

from __future__ import annotations

import copy
import logging
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
)

log = logging.getLogger(__name__)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_DEPTH = 32

# Request models: strict types (no bool for a number, no "3" for 3), unknown keys refused.
INPUT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1, description="A seed, 0 to 2**32-1.")]


def check_json(value: Any, path: str = "", depth: int = 0) -> None:
    """Raise ValueError naming the first value that would not store and read back."""
    # Every event of a feedback batch passes here (metadata, inputs): walk without building
    # paths first, and only for a value that fails walk again to say where.
    if not _storable(value, depth):
        _explain(value, path, depth)


def _storable(value: Any, depth: int) -> bool:
    """Whether `_explain` finds nothing to say about `value` (same rules, no messages)."""
    if depth > MAX_DEPTH:
        return False
    kind = type(value)
    if kind is str or value is None or kind is bool or isinstance(value, str):
        return True  # (bool has no subclasses)
    if isinstance(value, int):
        return INT64_MIN <= value <= INT64_MAX
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        for child in value.values():
            if not _storable(child, depth + 1):
                return False
    elif isinstance(value, list):
        for child in value:
            if not _storable(child, depth + 1):
                return False
    return True


def _explain(value: Any, path: str, depth: int) -> None:
    where = path or "the value"
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(
                f"{where}: integer {_short(value)} is outside the 64-bit range "
                f"({INT64_MIN}..{INT64_MAX}); send it as a string"
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} is not a JSON number; send a finite number")
    elif isinstance(value, dict):
        for key, child in value.items():
            _explain(child, f"{path}.{key}" if path else str(key), depth + 1)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            _explain(child, f"{path}[{index}]", depth + 1)


def _short(value: int) -> str:
    digits = str(abs(value)) if value.bit_length() < 10_000 else "a very long number"
    sign = "-" if value < 0 else ""
    return sign + (digits if len(digits) <= 30 else f"{digits[:12]}... ({len(digits)} digits)")


def _checked(value: Any) -> Any:
    check_json(value)
    return value


Json = Annotated[JsonValue, AfterValidator(_checked)]
JsonObject = Annotated[dict[str, JsonValue], AfterValidator(_checked)]

_LAX_DATETIME = TypeAdapter(datetime)


def _parse_timestamp(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError("expected an ISO 8601 date-time string, e.g. 2024-05-01T12:00:00Z")
    try:
        return _LAX_DATETIME.validate_python(value)
    except ValidationError as error:
        raise ValueError(
            f"{value[:40]!r} is not an ISO 8601 date-time, e.g. 2024-05-01T12:00:00Z"
        ) from error


def _utc(value: datetime) -> datetime:
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError as error:
        raise ValueError("lies outside the years 1..9999 once converted to UTC") from error


Timestamp = Annotated[datetime, BeforeValidator(_parse_timestamp), AfterValidator(_utc)]

_VERSION_NUMBER = re.compile(r"[vV]?([0-9]+)")


def version_number(ref: str) -> int | None:
    """The number in a version reference (`v3`, `3`), None for an alias name.

    Only ASCII digits count: `str.isdigit()` also accepts '²' and '٣', which `int()`
    refuses. A reference made of other digits, or a number past the 64-bit range, is a
    ValueError (the caller answers 422)."""
    found = _VERSION_NUMBER.fullmatch(ref)
    if found is None:
        digits = ref[1:] if ref[:1] in ("v", "V") else ref
        if digits.isdigit():
            raise ValueError(
                f"version {ref!r}: a version number takes the ASCII digits 0-9 (v3 or 3)"
            )
        return None
    number = int(found.group(1))
    if number > INT64_MAX:
        raise ValueError(f"version {ref[:40]!r}: no version has a number that large")
    return number


Model = TypeVar("Model", bound=BaseModel)


def read_stored(model: type[Model], data: Any, what: str) -> Model:
    """Validate stored data leniently: coercion allowed, and a field that still fails
    (an old row with a float where an int belongs, a value out of today's bounds) falls
    back to its default, with a warning in the log, instead of failing every reader."""
    data = copy.deepcopy(dict(data or {}))  # never edit the ORM row's own JSON
    for _attempt in range(20):
        try:
            return model.model_validate(data, strict=False)
        except ValidationError as error:
            first = error.errors()[0]
            dropped = _drop(data, list(first["loc"]))
            log.warning(
                "stored %s: %s at %s is invalid (%s); %s",
                what,
                repr(first.get("input"))[:80],
                ".".join(str(p) for p in first["loc"]) or "(root)",
                first["msg"],
                "using its default" if dropped else "using all defaults",
            )
            if not dropped:
                return model.model_validate({}, strict=False)
    return model.model_validate({}, strict=False)


def _drop(data: dict[str, Any], loc: list[int | str]) -> bool:
    """Remove the value at `loc` (or its nearest removable parent); False if none."""
    parents: list[tuple[dict[str, Any], str]] = []
    node: Any = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            parents.append((node, str(part)))
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]  # lists keep their length; the dict holding them loses it
        else:
            break
    if not parents:
        return False
    container, key = parents[-1]
    del container[key]
    return True
