"""Reject oversize bodies before they are read into memory.

Routes that take whole files (imports) are marked with `@large_body` and get
`max_import_bytes`; every other route gets `max_request_bytes`. The middleware finds the
route the request will reach by matching the scope against the app's routes, as the router
does, so a project or item that happens to be named `import` gets no larger limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LARGE_BODY = "_fineloop_large_body"
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def large_body(endpoint: Endpoint) -> Endpoint:
    """Mark a route's endpoint as taking a whole file: its limit is `max_import_bytes`."""
    setattr(endpoint, LARGE_BODY, True)
    return endpoint


@dataclass(frozen=True)
class RoutePattern:
    """A marked route as the router matches it: its full path pattern and methods."""

    path: str
    regex: re.Pattern[str]
    methods: frozenset[str]

    def matches(self, scope: Scope) -> bool:
        return scope["method"] in self.methods and bool(self.regex.match(_route_path(scope)))


def _route_path(scope: Scope) -> str:
    """The path the router matches: without the root path an app is mounted under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def large_body_routes(routes: Sequence[BaseRoute]) -> list[RoutePattern]:
    """The routes whose endpoints are marked `@large_body`, included routers flattened."""
    found = []
    for context in iter_route_contexts(routes):
        if context.path and getattr(context.endpoint, LARGE_BODY, False):
            regex, _, _ = compile_path(context.path)
            found.append(RoutePattern(context.path, regex, frozenset(context.methods or ())))
    return found


class BodyLimit:
    """Pure ASGI middleware: 413 when Content-Length, or the streamed body, is too large."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_import_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_import_bytes = max_import_bytes
        self._large: list[RoutePattern] | None = None  # read on the first request

    def limit(self, scope: Scope) -> int:
        """The limit of the route this request reaches (its method and path pattern)."""
        if self._large is None:
            router = getattr(scope.get("app"), "router", None)
            self._large = large_body_routes(getattr(router, "routes", []))
        if any(route.matches(scope) for route in self._large):
            return self.max_import_bytes
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        received = 0

        async def counted_receive() -> Message:
            # Raised as an HTTPException so FastAPI's body reader passes it through as is.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, detail=too_large_message(limit))
            return message

        await self.app(scope, counted_receive, send)


def too_large_message(limit: int) -> str:
    return f"request body is larger than {limit} bytes; split it into smaller batches"


async def _too_large(send: Send, limit: int) -> None:
    body: dict[str, Any] = {"error": "too_large", "message": too_large_message(limit)}
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": payload})
