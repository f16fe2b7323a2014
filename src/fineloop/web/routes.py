"""The dashboard: server-rendered pages over the store, a login, and the static files.

Pages read the store directly; every action on them (train, cancel, promote, rollout
weights) goes through the JSON API from small scripts, with the same checks as any other
client. With API keys in use, the pages need an admin key, kept in an HttpOnly cookie that
the API also accepts from the dashboard's own pages (see `api.deps.dashboard_cookie`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from fineloop import __version__, auth
from fineloop.api.deps import KeyCache, StoreDep, checked_scope, from_own_pages, require
from fineloop.api.throttle import TooManyFailures
from fineloop.errors import Forbidden, NotFound, Unauthorized
from fineloop.policies import ReviewRanking
from fineloop.web import families, views
from fineloop.web.review import review_page

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
COOKIE_SECONDS = 7 * 24 * 3600
# Scripts and styles come from this server only; no page of it may be framed elsewhere.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'"
)

templates = Jinja2Templates(env=families.environment(HERE / "templates"))
templates.env.filters["ago"] = views.ago
templates.env.filters["size"] = views.size_text
templates.env.filters["pretty_json"] = views.pretty_json
router = APIRouter(include_in_schema=False)


@router.get("/")
def projects(request: Request, store: StoreDep) -> Response:
    if (login := _login_needed(request)) is not None:
        return login
    with store.read() as session:
        rows = views.projects_page(session)
    return _render(request, "projects.html", {"projects": rows})


@router.get("/projects/{project}")
def project(project: str, request: Request, store: StoreDep) -> Response:
    if (login := _login_needed(request)) is not None:
        return login
    if not PROJECT_NAME.match(project):
        return _not_found(request, f"there is no project {project!r}")
    try:
        with store.read() as session:
            data = views.project_page(session, project, _page(request))
    except NotFound as error:
        return _not_found(request, error.message)
    charted = {k: v for k, v in data.items() if k != "family"}  # the panel is HTML only
    return _render(request, "project.html", data, page_data=charted)


@router.get("/projects/{project}/review")
def review(project: str, request: Request, store: StoreDep) -> Response:
    """The review queue, one interaction at a time; answers go to the feedback API."""
    if (login := _login_needed(request)) is not None:
        return login
    if not PROJECT_NAME.match(project):
        return _not_found(request, f"there is no project {project!r}")
    asked = request.query_params.get("ranking")  # anything else: the policy's ranking
    ranking = next((r for r in get_args(ReviewRanking) if r == asked), None)
    try:
        with store.read() as session:
            data = review_page(session, project, ranking)
    except NotFound as error:
        return _not_found(request, error.message)
    return _render(request, "review.html", data, page_data=data)


@router.get("/jobs/{job_id}")
def job(job_id: str, request: Request, store: StoreDep) -> Response:
    if (login := _login_needed(request)) is not None:
        return login
    if not (job_id.isascii() and job_id.isdigit()) or not 0 < int(job_id) < 2**31:
        return _not_found(request, f"there is no job {job_id!r}")
    try:
        with store.read() as session:
            data = views.job_page(session, int(job_id))
    except NotFound as error:
        return _not_found(request, error.message)
    return _render(request, "job.html", data, page_data=data)


@router.get("/login")
def login_form(request: Request, next: str = "/") -> Response:
    if not _keys(request).auth_enabled():
        return RedirectResponse(_local(next), status_code=303)
    return _render(request, "login.html", {"next": _local(next), "error": None})


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the key; an admin key goes into the cookie, anything else back to the form."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0].strip()
    target = _local((form.get("next") or ["/"])[0])
    if not from_own_pages(request):
        return _login_error(request, target, "log in from this server's own login page", 403)
    if not key:
        return _login_error(request, target, "unknown or revoked API key", 401)
    try:  # capped length and the failure throttle, as for the Authorization header
        scope = await run_in_threadpool(checked_scope, request, key)
    except (Unauthorized, TooManyFailures) as error:
        return _login_error(request, target, error.message, error.status)
    if scope != "admin":
        message = f"this key has scope {scope!r}; the dashboard needs an admin key"
        return _login_error(request, target, message, 403)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        auth.COOKIE,
        key,
        max_age=COOKIE_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    response = RedirectResponse("/login", status_code=303)
    if from_own_pages(request):
        response.delete_cookie(auth.COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/static/{path:path}")
def static(path: str) -> Response:
    """The dashboard's scripts, styles and vendored libraries (no CDN at run time)."""
    try:
        target = (STATIC / path).resolve()
        found = target.is_relative_to(STATIC) and target.is_file()
    except (ValueError, OSError):  # a NUL byte, a name too long: no such file either
        found = False
    if not found:
        return PlainTextResponse("not found", status_code=404)
    return FileResponse(target, headers={"Cache-Control": "public, max-age=3600"})


def _page(request: Request) -> int:
    """The `page` query parameter; anything that is no small positive number is page 1."""
    text = request.query_params.get("page", "1")
    return int(text) if text.isascii() and text.isdigit() and len(text) < 6 else 1


def _keys(request: Request) -> KeyCache:
    keys: KeyCache = request.app.state.keys
    return keys


def _login_needed(request: Request) -> Response | None:
    """None when the request may see the pages; otherwise the way to the login form."""
    try:
        require("admin")(request)
    except Unauthorized:
        target = quote(request.url.path, safe="/")
        return RedirectResponse(f"/login?next={target}", status_code=303)
    except Forbidden as error:
        return _login_error(request, request.url.path, error.message, 403)
    return None


def _login_error(request: Request, target: str, message: str, status: int) -> Response:
    return _render(request, "login.html", {"next": target, "error": message}, status=status)


def _not_found(request: Request, message: str) -> Response:
    return _render(request, "error.html", {"title": "Not found", "message": message}, status=404)


def _local(target: str) -> str:
    """Only paths on this server after a login: no open redirect to another site."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    page_data: dict[str, Any] | None = None,
) -> Response:
    context = context | {
        "auth_on": _keys(request).auth_enabled(),
        "version": __version__,
        "page_data": page_data or {},
    }
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    return response
