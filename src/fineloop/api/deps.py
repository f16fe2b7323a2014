"""Dependencies shared by the routers: the store, and who is calling with which scope."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request

from fineloop import auth
from fineloop.config import Settings
from fineloop.errors import Forbidden, Invalid, Unauthorized
from fineloop.store import Store

_CACHE_SECONDS = 5.0


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]


class KeyCache:
    """Key lookups for a few seconds, so authentication costs no query per request.

    A revoked key stops working within `_CACHE_SECONDS`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._scopes: dict[str, tuple[float, str | None]] = {}
        self._auth_on: tuple[float, bool] = (0.0, False)

    def auth_enabled(self) -> bool:
        checked, enabled = self._auth_on
        if time.monotonic() - checked > _CACHE_SECONDS:
            with self.store.read() as session:
                enabled = auth.any_key_exists(session)
            self._auth_on = (time.monotonic(), enabled)
        return enabled

    def scope_of(self, key: str) -> str | None:
        cached = self._scopes.get(key)
        if cached is not None and time.monotonic() - cached[0] <= _CACHE_SECONDS:
            return cached[1]
        with self.store.read() as session:
            scope = auth.find_scope(session, key)
        self._scopes[key] = (time.monotonic(), scope)
        return scope

    def forget(self) -> None:
        self._scopes.clear()
        self._auth_on = (0.0, False)


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
        granted = keys.scope_of(token.strip())
        if granted is None:
            raise Unauthorized("unknown or revoked API key")
        if granted != "admin" and granted != scope:
            raise Forbidden(f"this key has scope {granted!r}; this route needs {scope!r}")

    return check


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
