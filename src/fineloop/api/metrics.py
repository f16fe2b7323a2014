"""Prometheus metrics at `/metrics`: requests and latencies per route, jobs, feedback.

Request metrics are counted in process by an ASGI middleware, labelled by the route
*template* (`/v1/projects/{project}/search`, never the concrete path, so label values stay
few); a request no route matched is labelled `<unmatched>`. Job and feedback numbers are
read from the store at scrape time, so every worker's jobs are seen, not only this
process's. Each app has its own registry: two apps in one process (tests) do not mix.

Metric names:
- `fineloop_http_requests_total{method,route,status}`: requests answered.
- `fineloop_http_request_duration_seconds{method,route}`: a histogram of their latencies.
- `fineloop_jobs{kind,state}`: jobs in the store per kind and state.
- `fineloop_queue_depth{kind,state}`: the active part of those (queued, running).
- `fineloop_feedback_events`: feedback events stored (ingested and not deleted).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fineloop.api.deps import Admin
from fineloop.api.responses import KEY
from fineloop.jobs.store import ACTIVE
from fineloop.store import Store
from fineloop.store.schema import Feedback, Job

UNMATCHED = "<unmatched>"

router = APIRouter(tags=["health"], dependencies=[Admin], responses=KEY)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
def metrics(request: Request) -> Response:
    """The server's metrics in Prometheus' text format (admin key when keys exist)."""
    from prometheus_client import generate_latest

    registry: CollectorRegistry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class StoreCollector(Collector):
    """Job and feedback counts, read from the store at each scrape."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "fineloop_jobs", "Jobs in the store, by kind and state.", labels=["kind", "state"]
        )
        queue = GaugeMetricFamily(
            "fineloop_queue_depth",
            "Jobs waiting or running, by kind and state.",
            labels=["kind", "state"],
        )
        feedback = GaugeMetricFamily(
            "fineloop_feedback_events", "Feedback events stored (ingested, not deleted)."
        )
        with self.store.read() as session:
            counts = session.execute(
                select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)
            ).all()
            stored = session.scalar(select(func.count()).select_from(Feedback)) or 0
        depth = {(kind, state): 0 for kind, _, _ in counts for state in ACTIVE}
        for kind, state, count in counts:
            jobs.add_metric([kind, state], count)
            if state in ACTIVE:
                depth[(kind, state)] = count
        for (kind, state), count in sorted(depth.items()):
            queue.add_metric([kind, state], count)
        feedback.add_metric([], stored)
        yield jobs
        yield queue
        yield feedback


class Metrics:
    """One app's registry and the request metrics its middleware records."""

    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "fineloop_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fineloop_http_request_duration_seconds",
            "Time to answer HTTP requests, by method and route template.",
            ["method", "route"],
            registry=self.registry,
        )
        self.registry.register(StoreCollector(store))


class RequestMetrics:
    """ASGI middleware: count and time every HTTP request by its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes every handler is answered with a 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)


def install(app: FastAPI, store: Store) -> None:
    """Serve `/metrics` and record requests. Called before the guarding middleware is added,
    so this one sits inside it: it counts the requests that reach the routes (their 4xx and
    5xx included), not those refused at the door (wrong host, body too large)."""
    app.state.metrics = Metrics(store)
    app.include_router(router)
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
