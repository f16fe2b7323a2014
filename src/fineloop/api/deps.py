"""Dependencies shared by the routers: the store, and who is calling with which scope."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request

from fineloop import auth
from fineloop.api.keycache import KeyCache as KeyCache  # routers import it from here
from fineloop.api.throttle import FailureThrottle
from fineloop.config import MAX_KEY_CHARS, Settings
from fineloop.errors import Forbidden, Invalid, Unauthorized
from fineloop.store import Store


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def require(scope: str) -> Callable[[Request], None]:
    """A dependency that lets the request through only with a key of `scope` (or admin)."""

    def check(request: Request) -> None:
        keys: KeyCache = request.app.state.keys
        if not keys.auth_enabled():
            return
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        if not header and (cookie := dashboard_cookie(request)):
            kind, token = "bearer", cookie  # the dashboard's login, from a page of this server
        if kind.lower() != "bearer" or not token:
            raise Unauthorized("send the header 'Authorization: Bearer <api key>'")
        granted = checked_scope(request, token.strip())
        if granted != "admin" and granted != scope:
            raise Forbidden(f"this key has scope {granted!r}; this route needs {scope!r}")

    return check


def checked_scope(request: Request, key: str) -> str:
    """The scope of `key`, or 401; a client that keeps sending unknown keys gets 429.

    An over-long key is refused before it is hashed or looked up: real keys are short."""
    throttle: FailureThrottle = request.app.state.auth_failures
    client = client_address(request)
    throttle.check(client)
    if len(key) > MAX_KEY_CHARS:
        throttle.failed(client)
        raise Unauthorized(
            f"the API key sent has {len(key)} characters; keys have at most {MAX_KEY_CHARS}"
        )
    keys: KeyCache = request.app.state.keys
    granted = keys.scope_of(key)
    if granted is None:
        throttle.failed(client)
        raise Unauthorized("unknown or revoked API key")
    return granted


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def dashboard_cookie(request: Request) -> str | None:
    """The key the dashboard's login stored in its cookie, if this request may use it.

    The cookie is SameSite=Strict, but other ports of the same host count as the same site,
    so it is taken only when the browser says the request comes from this server's own pages
    (Sec-Fetch-Site, Origin)."""
    key = request.cookies.get(auth.COOKIE)
    return key if key and from_own_pages(request) else None


def from_own_pages(request: Request) -> bool:
    """Whether the browser says this request comes from a page of this server (or from the
    person typing the address): a change (POST, PUT, ...) must say so explicitly."""
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is not None and site not in ("same-origin", "none"):
        return False
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        return False
    return request.method in ("GET", "HEAD") or site == "same-origin" or origin is not None


Ingest = Depends(require("ingest"))
Admin = Depends(require("admin"))


def check_batch_size(count: int, settings: Settings) -> None:
    if count > settings.max_batch_events:
        raise Invalid(
            f"{count} rows in one request; this server takes at most "
            f"{settings.max_batch_events}: split the batch",
            field="events",
        )
