"""The FastAPI application: ``create_app(settings)``.

Every ``/api/v1`` endpoint needs an API key (viewer at least; writes say which role).
``/health`` (is the database reachable) and ``/metrics`` (Prometheus) need none: probes
and scrapers carry no keys, and neither exposes plant data — ``/metrics`` holds only
request counts and latencies by route template. ``/docs`` is the OpenAPI UI.
"""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api.assets.routes import router as assets_router
from api.config import ApiSettings
from api.db import make_engine
from api.downtime.routes import router as downtime_router
from api.errors import install_handlers
from api.live.routes import router as live_router
from api.oee.parallel import Helpers
from api.oee.routes import router as oee_router
from api.planning.routes import router as planning_router
from api.production.routes import router as production_router
from api.timeseries.routes import router as timeseries_router

API_PREFIX = "/api/v1"
DESCRIPTION = """Assets, OEE, downtime and yield of the plants linepulse collects.

Authenticate with an API key (`linepulse api keys create --name N --role viewer`) in
`Authorization: Bearer <key>` or `X-API-Key: <key>`. Roles: viewer (read), operator
(also assign downtime reasons), admin (also change configuration). Timestamps are ISO 8601
with a UTC offset. Errors are `{"error": {"code", "message", "field"}}`.
"""

REQUESTS = Counter("linepulse_api_requests", "API requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "linepulse_api_request_seconds",
    "API request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

# Routers of the domains, in the order they appear in /docs; each mounts under /api/v1.
ROUTERS: list[APIRouter] = [
    assets_router,
    live_router,
    timeseries_router,
    downtime_router,
    oee_router,
    production_router,
    planning_router,
]


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """The API application for ``settings`` (from the environment when None)."""
    settings = settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What exists once the app has started lives as long as the process: out of the
        # garbage collector's sight, a full collection no longer walks it (a pause of tens
        # of milliseconds in the middle of a request otherwise).
        gc.collect()
        gc.freeze()
        yield
        app.state.oee_helpers.close()
        app.state.engine.dispose()

    app = FastAPI(
        title="linepulse API",
        description=DESCRIPTION,
        version="1",
        docs_url="/docs",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = make_engine(settings)
    app.state.oee_helpers = Helpers(
        make_engine(settings, pool_size=max(settings.oee_workers, 1)), settings.oee_workers
    )
    install_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.middleware("http")(_measure)
    app.add_api_route(
        "/health",
        health,
        methods=["GET"],
        tags=["service"],
        response_model=HealthStatus,
        responses={503: {"model": HealthStatus, "description": "The database is unreachable"}},
    )
    app.add_api_route(
        "/metrics", metrics, methods=["GET"], tags=["service"], response_class=PlainTextResponse
    )
    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    return app


async def _measure(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Count and time requests by route template (never the raw path: bounded labels)."""
    start = time.perf_counter()
    response = await call_next(request)
    route = _route_template(request)
    LATENCY.labels(request.method, route).observe(time.perf_counter() - start)
    REQUESTS.labels(request.method, route, str(response.status_code)).inc()
    return response


def _route_template(request: Request) -> str:
    """The matched route's full path template, e.g. ``/api/v1/assets/{asset_id}``."""
    route = getattr(request.scope.get("route"), "path", None)
    if not isinstance(route, str):
        return "unmatched"
    # Recent FastAPI keeps an included router's routes unprefixed in scope["route"].
    if request.url.path.startswith(API_PREFIX) and not route.startswith(API_PREFIX):
        return API_PREFIX + route
    return route


class HealthStatus(BaseModel):
    """The answer of /health."""

    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unreachable"]


def health(request: Request) -> JSONResponse:
    """Whether the API is up and its database reachable (no key needed)."""
    engine = request.app.state.engine
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError:
        down = HealthStatus(status="unavailable", database="unreachable")
        return JSONResponse(down.model_dump(), status_code=503)
    return JSONResponse(HealthStatus(status="ok", database="ok").model_dump())


def metrics() -> Response:
    """Prometheus metrics of this process (no key needed; no plant data)."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
