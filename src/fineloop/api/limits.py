"""Reject oversize bodies before they are read into memory."""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

IMPORT_MARKER = "/import/"


class BodyLimit:
    """Pure ASGI middleware: 413 when Content-Length, or the streamed body, is too large."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, max_import_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_import_bytes = max_import_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_import_bytes if IMPORT_MARKER in scope["path"] else self.max_bytes
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
