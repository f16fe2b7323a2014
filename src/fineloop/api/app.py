"""`create_app(settings)`: the FastAPI application over one store."""

from __future__ import annotations

import logging

from fastapi import APIRouter, FastAPI

from fineloop import __version__, auth
from fineloop.api import errors, metrics
from fineloop.api.guard import Guard
from fineloop.api.keycache import KeyCache
from fineloop.api.limits import BodyLimit
from fineloop.api.routes import (
    feedback,
    health,
    interactions,
    items,
    job_kinds,
    jobs,
    keys,
    models,
    projects,
    review,
    rollouts,
    search_jobs,
    snapshots,
    transfer,
    webhooks,
)
from fineloop.api.throttle import FailureThrottle
from fineloop.config import Settings, get_settings
from fineloop.serving.journal import attach
from fineloop.store import Store
from fineloop.tasks import available, get_task
from fineloop.web import routes as web_routes

log = logging.getLogger("fineloop.api")


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    """Open (and migrate) the store, register configured keys, and mount every router."""
    settings = settings or get_settings()
    store = store or Store.open(settings)
    register_configured_keys(store, settings)
    app = FastAPI(
        title="fineloop",
        version=__version__,
        description="From user feedback to better models: ingest, reward, train, serve.",
    )
    app.state.settings = settings
    app.state.store = store
    app.state.keys = KeyCache(store)
    app.state.auth_failures = FailureThrottle(settings.auth_failures_per_minute)
    journal = attach(store, settings)  # served interactions: journaled, stored in batches
    if journal is not None:
        app.router.on_shutdown.append(journal.close)
    errors.install(app)
    for module in (health, projects, items, interactions, feedback, transfer, keys):
        app.include_router(module.router)
    for router in task_routers():  # what each installed family serves (embedding: search…)
        app.include_router(router)
    for module in (jobs, models, snapshots):  # training jobs, the model registry, snapshots
        app.include_router(module.router)
    app.include_router(search_jobs.router)  # hyperparameter search jobs
    app.include_router(job_kinds.router)  # snapshot build and evaluation jobs
    app.include_router(rollouts.router)  # A/B rollouts between versions
    app.include_router(review.router)  # the review queue (active learning)
    app.include_router(webhooks.router)  # the secret that signs webhook deliveries
    app.include_router(web_routes.router)  # the dashboard at /
    metrics.install(app, store)  # /metrics, and request counts by route template

    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_request_bytes,
        max_import_bytes=settings.max_import_bytes,
    )
    app.add_middleware(  # outermost: hosts, cross-site changes, body types, throttled clients
        Guard,
        allowed_hosts=settings.allowed_hosts,
        openapi=app.openapi,
        throttle=app.state.auth_failures,
        key_cookie=auth.COOKIE,
    )
    return app


def task_routers() -> list[APIRouter]:
    """The routes of every installed task family, in name order. A family that fails to
    load is logged and left out, so one broken plugin does not take the server down."""
    found = []
    for name in sorted(available()):
        try:
            router = get_task(name).routes()
        except Exception:
            log.exception("task %r could not be loaded; its routes are not served", name)
            continue
        if router is not None:
            found.append(router)
    return found


def register_configured_keys(store: Store, settings: Settings) -> None:
    pairs = settings.configured_keys()
    if not pairs:
        return
    with store.write() as session:
        for index, (key, scope) in enumerate(pairs):
            auth.create_key(session, f"configured-{index + 1}", scope, secret=key)
