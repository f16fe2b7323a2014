"""What a web page in the user's browser must not be able to do to this server.

In open mode (no keys) the server trusts whoever can reach 127.0.0.1, and with keys the
dashboard's cookie makes the browser carry one. Either way a page from another site must
not reach it. The guard, in front of every route (pure ASGI, before any body is read):

- answers only the host names it serves (localhost, loopback and other IP addresses, plus
  the setting `allowed_hosts`), so DNS rebinding (evil.example resolving to 127.0.0.1)
  reaches nothing: 400;
- refuses changes (POST, PUT, PATCH, DELETE) that the browser says come from another site
  (`Sec-Fetch-Site`, `Origin`): 403. Clients that send neither (the SDK, curl) pass;
- refuses, on routes that read JSON, a body that is not `application/json`, and on file
  routes the types an HTML form can send without asking (text/plain, form posts): 415.
  Those are the requests a page can make without a CORS preflight.
- answers 429 at once to a client over its limit of unknown keys, before its body is read.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from fineloop.api.throttle import FailureThrottle

CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOCAL_NAMES = frozenset({"localhost"})
JSON = "application/json"
# What a page may send cross-origin without a preflight (the CORS-safelisted types).
FORM_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: str,
        openapi: Callable[[], dict[str, Any]],
        throttle: FailureThrottle,
        key_cookie: str,
    ) -> None:
        self.app = app
        names = {name.strip().lower().rstrip(".") for name in allowed_hosts.split(",")}
        self.any_host = "*" in names
        self.hosts = LOCAL_NAMES | (names - {"", "*"})
        self.openapi = openapi
        self.throttle = throttle
        self.key_cookie = key_cookie.encode()
        self._media: list[tuple[str, re.Pattern[str], frozenset[str]]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        refusal = self.refusal(scope, headers)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, code, message, extra = refusal
        if has_body(headers):  # not read: the connection cannot carry another request
            extra = [*extra, (b"connection", b"close")]
        await _answer(send, status, {"error": code, "message": message}, extra)

    def refusal(
        self, scope: Scope, headers: dict[bytes, bytes]
    ) -> tuple[int, str, str, list[tuple[bytes, bytes]]] | None:
        """(status, code, message, headers) if the request must be refused, else None."""
        host = headers.get(b"host", b"").decode("latin-1")
        if host and not self.host_allowed(host):
            return (
                400,
                "host_not_allowed",
                f"this server does not answer for the host {host_name(host)!r}; add it to "
                "the setting allowed_hosts (FINELOOP_ALLOWED_HOSTS) to serve it",
                [],
            )
        if scope["method"] in CHANGES and (reason := cross_site(headers, host)):
            return (
                403,
                "cross_site",
                f"{reason}: changes are accepted only from this server's own pages or from "
                "clients that are not browsers",
                [],
            )
        if b"authorization" in headers or self.key_cookie in headers.get(b"cookie", b""):
            client = scope["client"][0] if scope.get("client") else "unknown"
            if (wait := self.throttle.retry_after(client)) is not None:
                message = (
                    f"more than {self.throttle.per_minute} requests with an unknown API key "
                    f"from this address in a minute; wait {wait} s (the setting "
                    "auth_failures_per_minute)"
                )
                return 429, "too_many_failures", message, [(b"retry-after", str(wait).encode())]
        if scope["method"] in CHANGES and has_body(headers):
            accepted = self.media_types(scope)
            sent = headers.get(b"content-type", b"").decode("latin-1")
            if accepted is not None and (problem := media_problem(sent, accepted)):
                return 415, "unsupported_media_type", problem, []
        return None

    def host_allowed(self, host: str) -> bool:
        if self.any_host:
            return True
        name = host_name(host)
        return name in self.hosts or _is_ip(name)

    def media_types(self, scope: Scope) -> frozenset[str] | None:
        """The body types the matching route reads (None: no body, or not ours to check)."""
        if self._media is None:
            self._media = body_types(self.openapi())
        method, path = scope["method"], scope["path"]
        for route_method, pattern, media in self._media:
            if route_method == method and pattern.fullmatch(path):
                return media
        return None


def body_types(document: dict[str, Any]) -> list[tuple[str, re.Pattern[str], frozenset[str]]]:
    """(method, path pattern, body types) of every documented route that reads a body,
    from the OpenAPI document: what the route declares is what it is held to. Routes left
    out of it (the dashboard's login form) read their own bodies."""
    found = []
    for template, operations in document.get("paths", {}).items():
        pattern, _, _ = compile_path(template)
        for method, operation in operations.items():
            content = (operation.get("requestBody") or {}).get("content") or {}
            if content:
                found.append((method.upper(), pattern, frozenset(content)))
    return found


def media_problem(sent: str, accepted: frozenset[str]) -> str | None:
    """Why a body of type `sent` is refused by a route reading `accepted`, or None."""
    media = sent.partition(";")[0].strip().lower()
    if accepted == {JSON}:
        if media == JSON or (media.startswith("application/") and media.endswith("+json")):
            return None
        got = f"Content-Type {media!r}" if media else "no Content-Type"
        return f"this route reads JSON: send the header 'Content-Type: {JSON}' (got {got})"
    # A file route: no type (the SDK streams the file as is), or any type but a form's.
    if media not in FORM_TYPES:
        return None
    names = ", ".join(sorted(accepted))
    return f"this route reads a file, not {media!r}: send it with a Content-Type of {names}"


def cross_site(headers: dict[bytes, bytes], host: str) -> str | None:
    """Why the browser's headers show this request comes from another site, or None.
    Requests without them (not from a browser) pass."""
    site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
    if site in ("cross-site", "same-site"):
        return f"the browser sent this request from another site (Sec-Fetch-Site: {site})"
    origin = headers.get(b"origin")
    if origin is None:
        return None
    text = origin.decode("latin-1")
    if not same_origin(text, host):
        return f"the browser sent this request from the page of {text!r}, not of {host!r}"
    return None


def same_origin(origin: str, host: str) -> bool:
    """Whether `Origin` names the host and port of the request's `Host` ("null", sent by
    sandboxed frames and local files, never does). Without a port in Host, the origin's
    scheme's default port is assumed (a proxy may terminate TLS in front of us)."""
    try:
        parts = urlsplit(origin)
        default = {"http": 80, "https": 443}.get(parts.scheme)
        origin_port = parts.port or default
        target = urlsplit(f"//{host}")
        host_port = target.port or default
    except ValueError:
        return False
    if not parts.hostname or parts.hostname != target.hostname:
        return False
    return origin_port == host_port


def has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length")
    if length is not None:
        return length.strip() not in (b"0", b"")
    return b"transfer-encoding" in headers


def host_name(host: str) -> str:
    """The name in a Host header, without port, brackets, case or trailing dot."""
    if host.startswith("["):
        return host[1:].partition("]")[0].lower()
    return host.rpartition(":")[0].lower().rstrip(".") if ":" in host else host.lower().rstrip(".")


def _is_ip(name: str) -> bool:
    """An IP address in Host cannot be a rebound name: a page's own address is its own
    origin, so any address this server is reached by is allowed (0.0.0.0 binds them all)."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """Request headers by lower-case name; a repeated header keeps its first value, as
    Starlette's `request.headers.get` does."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        found.setdefault(name.lower(), value)
    return found


async def _answer(
    send: Send, status: int, body: dict[str, str], extra: list[tuple[bytes, bytes]]
) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
