"""HTTP with fineloop's error bodies turned into exceptions, and safe retries.

A call is retried only when repeating it cannot store anything twice: reads, PUT/PATCH/DELETE,
and writes whose rows all carry ids or idempotency keys. A refused connection is retried for
every call, since nothing reached the server. A 503 with Retry-After (an index still
building, a model loading: the server did nothing) is sent again after the pause it asks
for, for every call, until the client's timeout is spent; then its error is raised.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, is_dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from fineloop import __version__

T = TypeVar("T")
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class FineloopError(Exception):
    """A request fineloop refused (status 4xx/5xx) or could not be sent (status 0).

    `code` is the server's error code ("not_found", "invalid_rows", ...), `body` its whole
    JSON answer; for a rejected batch, `invalid_rows` lists the rows at fault."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        body: Mapping[str, Any],
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.body = dict(body)
        self.retry_after = retry_after  # seconds, from a 503's Retry-After header

    @property
    def invalid_rows(self) -> list[dict[str, Any]]:
        rows = self.body.get("invalid_rows")
        return list(rows) if isinstance(rows, list) else []

    def __repr__(self) -> str:
        return f"FineloopError({self.status}, {self.code!r}, {self.message!r})"


def error_of(response: httpx.Response) -> FineloopError:
    """The server's JSON error as an exception; a plain-text body becomes the message."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = response.text.strip()[:500] or response.reason_phrase
        body = {"error": "http_error", "message": text}
    message = str(body.get("message") or body.get("detail") or response.reason_phrase)
    code = str(body.get("error") or "http_error")
    inner = body.get("error")
    if isinstance(inner, dict):  # the OpenAI-compatible routes: {"error": {message, code}}
        message = str(inner.get("message") or response.reason_phrase)
        code = str(inner.get("code") or inner.get("type") or "http_error")
    retry_after = None
    if response.status_code == 503:
        try:
            retry_after = max(0.0, float(response.headers.get("retry-after", "")))
        except ValueError:  # absent, or an HTTP date: no promise to retry on
            retry_after = None
    return FineloopError(response.status_code, code, message, body, retry_after)


def encode(value: Any) -> bytes:
    """JSON bytes for a request body; datetimes, dataclasses and pydantic models included."""
    return json.dumps(value, default=_jsonable, ensure_ascii=False).encode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return dict(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class Transport:
    """One httpx connection pool, the API key, and the retry policy."""

    def __init__(
        self, url: str, api_key: str | None, timeout: float, retries: int, backoff: float
    ) -> None:
        headers = {"user-agent": f"fineloop-sdk/{__version__}"}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        upload: Path | None = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool = False,
    ) -> Any:
        """Send one request and return its decoded JSON (None for an empty body).

        `body` travels as JSON; `upload` is a file streamed as the raw body."""
        data = encode(body) if body is not None else None
        headers = {"content-type": "application/json"} if body is not None else None

        def attempt() -> Any:
            with upload.open("rb") if upload else nullcontext(None) as stream:
                response = self.http.request(
                    method,
                    path,
                    content=stream if upload else data,
                    params=_query(params),
                    headers=headers,
                )
            if response.is_error:
                raise error_of(response)
            return response.json() if response.content else None

        return self.waiting(lambda: self.retrying(attempt, idempotent=idempotent))

    def waiting(self, send: Callable[[], T]) -> T:
        """`send` again while the server answers 503 with Retry-After (it did nothing),
        after the pause it asks for, until `timeout` seconds have passed."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return send()
            except FineloopError as error:
                left = deadline - time.monotonic()
                if error.retry_after is None or left <= 0:
                    raise
                time.sleep(min(max(error.retry_after, 0.05), left))

    def obj(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        """`call` expecting a JSON object; reads are idempotent unless told otherwise."""
        kw.setdefault("idempotent", method == "GET")
        answer = self.call(method, path, **kw)
        if not isinstance(answer, dict):
            raise FineloopError(0, "bad_answer", f"expected a JSON object from {path}", {})
        return answer

    def array(self, method: str, path: str, **kw: Any) -> list[dict[str, Any]]:
        """`call` expecting a JSON list."""
        kw.setdefault("idempotent", method == "GET")
        answer = self.call(method, path, **kw)
        if not isinstance(answer, list):
            raise FineloopError(0, "bad_answer", f"expected a JSON list from {path}", {})
        return answer

    def pages(self, path: str, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Every item of a paged list, following `next_cursor` as the `after` parameter."""
        after = 0
        while True:
            page = self.obj("GET", path, params={**params, "after": after})
            yield from page["items"]
            if page.get("next_cursor") is None:
                return
            after = int(page["next_cursor"])

    def retrying(self, attempt: Callable[[], T], *, idempotent: bool) -> T:
        """Run `attempt`, again after a growing pause when the failure allows it."""
        for tries in range(self.retries + 1):
            try:
                return attempt()
            except httpx.TransportError as error:
                sent = not isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
                if tries == self.retries or (sent and not idempotent):
                    raise FineloopError(
                        0,
                        "unreachable",
                        f"cannot reach {self.http.base_url}: {error or type(error).__name__}",
                        {},
                    ) from error
            except FineloopError as error:
                if tries == self.retries or not idempotent or error.retry_after is not None:
                    raise  # a Retry-After is `waiting`'s to honour
                if error.status not in _RETRYABLE_STATUS:
                    raise
            time.sleep(self.backoff * 2**tries)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.http.close()


def _query(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Query parameters as the API reads them: ISO datetimes, lower-case booleans, no Nones."""
    if not params:
        return None
    out: dict[str, str] = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, datetime | date):
            out[name] = value.isoformat()
        else:
            out[name] = str(value)
    return out


def project_path(project: str) -> str:
    return f"/v1/projects/{segment(project)}"


def segment(value: object) -> str:
    """A value quoted to sit safely inside a URL path."""
    return quote(str(value), safe="")


def chunks(rows: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(rows), size):
        yield list(rows[start : start + size])
