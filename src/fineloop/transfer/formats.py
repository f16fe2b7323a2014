"""Reading and writing rows in JSONL, CSV and Parquet.

Nested values (metadata, payloads, structured inputs and outputs) travel as JSON text in
CSV and Parquet cells, so every format carries the same rows. Parse errors name the line.
Text must be UTF-8: bytes that are not, in any format, are a 422 naming the line and column
(never a 500 from a decoder deep inside the store or the database driver).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from fineloop.errors import BadFile, Invalid

Format = Literal["jsonl", "csv", "parquet"]
FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")
NESTED = frozenset(
    {"metadata", "payload", "input", "output", "selected", "rejected", "chosen", "spans", "items"}
)
# Free text is welcome in these cells: a value that is not JSON is kept as a string.
LENIENT = frozenset({"input", "output", "chosen", "rejected"})
# Parquet has no line numbers; its errors name the row number (1-based) as the line.


def guess_format(filename: str) -> Format:
    lowered = filename.lower()
    for suffix, name in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".csv", "csv")):
        if lowered.endswith(suffix):
            return name  # type: ignore[return-value]
    if lowered.endswith((".parquet", ".pq")):
        return "parquet"
    raise Invalid(f"cannot tell the format of {filename!r}; name it .jsonl, .csv or .parquet")


def read_rows(data: bytes, fmt: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, row) pairs; raise Invalid naming the line on malformed input."""
    if fmt == "jsonl":
        rows = _read_jsonl(data)
    elif fmt == "csv":
        rows = _read_csv(data)
    elif fmt == "parquet":
        rows = _read_parquet(data)
    else:
        raise Invalid(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}", field="format")
    for number, row in rows:
        check_text(number, row)
        yield number, row


def json_line(number: int, raw: bytes) -> Any:
    """One line of a JSON Lines file, parsed; bytes that are not UTF-8 are kept as lone
    surrogates so that `check_text` can name the field they are in."""
    text = raw.decode("utf-8-sig" if number == 1 else "utf-8", "surrogateescape")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BadFile(number, f"not valid JSON ({error})") from error


def check_text(number: int, value: Any, column: str = "") -> None:
    """BadFile naming the column when any text in `value` is not valid Unicode (bytes that
    were not UTF-8, or a lone surrogate such as JSON's "\\ud800"): no database stores it."""
    if isinstance(value, str):
        if not _encodable(value):
            where = f"column {column!r}" if column else "a column name"
            raise BadFile(number, f"{where} is not valid UTF-8 text", field=column or "file")
    elif isinstance(value, dict):
        for key, inner in value.items():
            path = f"{column}.{key}" if column else str(key)
            if isinstance(key, str) and not _encodable(key):
                where = f"a key in column {column!r}" if column else "a column name"
                raise BadFile(number, f"{where} is not valid UTF-8 text")
            check_text(number, inner, path)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            check_text(number, inner, f"{column}.{index}" if column else str(index))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_jsonl(data: bytes) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        row = json_line(number, raw)
        if not isinstance(row, dict):
            raise BadFile(number, "expected a JSON object per line")
        yield number, row


def _read_csv(data: bytes) -> Iterator[tuple[int, dict[str, Any]]]:
    # Bytes that are not UTF-8 become lone surrogates, found per row and column later.
    text = data.decode("utf-8-sig", "surrogateescape")
    # Long outputs are normal in feedback; Python's default cell limit is 128 KiB.
    csv.field_size_limit(max(csv.field_size_limit(), len(data) + 1))
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        if not reader.fieldnames:  # reads the header row, which may be malformed too
            raise BadFile(1, "the CSV file needs a header row")
        for row in reader:
            number = reader.line_num
            if None in row:
                raise BadFile(number, "more cells than header columns")
            yield number, {k: _cell(k, v, number) for k, v in row.items() if v not in ("", None)}
    except csv.Error as error:
        raise BadFile(reader.line_num, f"malformed CSV ({error})") from error


def _read_parquet(data: bytes) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as error:
        raise Invalid(f"not a readable Parquet file ({error})", field="file") from error
    try:
        rows = table.to_pylist()
    except (UnicodeDecodeError, pa.ArrowException):
        raise _unreadable_cell(table) from None
    for index, row in enumerate(rows):
        number = index + 1
        yield number, {k: _cell(k, v, number) for k, v in row.items() if v is not None}


def _unreadable_cell(table: Any) -> Invalid:
    """The first cell of `table` that does not convert to Python (text that is not UTF-8):
    looked for only once reading the whole table failed."""
    for name in table.column_names:
        column = table.column(name)
        if _converts(column):
            continue
        for index in range(len(column)):
            try:
                column.slice(index, 1).to_pylist()
            except UnicodeDecodeError:
                return BadFile(index + 1, f"column {name!r} is not valid UTF-8 text", field=name)
            except Exception as error:
                return BadFile(index + 1, f"column {name!r} cannot be read ({error})", field=name)
    return Invalid("the Parquet file's cells cannot be read", field="file")


def _converts(column: Any) -> bool:
    try:
        column.to_pylist()
    except Exception:  # UnicodeDecodeError, or one of pyarrow's many errors
        return False
    return True


def _cell(key: str, value: Any, number: int) -> Any:
    if key not in NESTED or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        if key in LENIENT:
            return value
        raise BadFile(number, f"column {key!r} must hold JSON ({error})", field=key) from error


def write_rows(rows: Iterable[dict[str, Any]], fmt: str, columns: list[str]) -> Iterator[bytes]:
    """Encode rows as chunks of the file; CSV and Parquet get `columns` in this order."""
    if fmt == "jsonl":
        for row in rows:
            yield (json.dumps(row, ensure_ascii=False, default=str) + "\n").encode()
    elif fmt == "csv":
        yield from _write_csv(rows, columns)
    elif fmt == "parquet":
        yield _write_parquet(rows, columns)
    else:
        raise Invalid(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}", field="format")


def _flat(row: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for column in columns:
        value = row.get(column)
        if column in NESTED and value is not None:
            value = json.dumps(value, ensure_ascii=False)
        elif value is not None and not isinstance(value, str | int | float | bool):
            value = str(value)
        flat[column] = value
    return flat


def _write_csv(rows: Iterable[dict[str, Any]], columns: list[str]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for count, row in enumerate(rows, start=1):
        writer.writerow(_flat(row, columns))
        if count % 1000 == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def _write_parquet(rows: Iterable[dict[str, Any]], columns: list[str]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = [_flat(row, columns) for row in rows]
    arrays = {column: [row[column] for row in flat] for column in columns}
    columns_out = {}
    for column, values in arrays.items():
        kind = _arrow_type(values)
        if kind == pa.string():
            values = [None if v is None else str(v) for v in values]
        columns_out[column] = pa.array(values, type=kind)
    table = pa.table(columns_out)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _arrow_type(values: list[Any]) -> Any:
    import pyarrow as pa

    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pa.float64()
    return pa.string()
