"""`create_app(settings)`: routers, middleware, the error mapping, and the lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from server.api import admin, errors, health, openai
from server.api.metrics_listener import serve_metrics
from server.api.middleware import BodyLimit, RequestContext
from server.runtime import Runtime
from server.settings import Settings

# Every router the app serves. Tests walk these rather than `app.routes`, whose shape
# FastAPI changed in 0.137 (included routers are no longer flattened into it).
ROUTERS = (openai.router, health.router, admin.router)


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """A gateway app; `runtime` may be given by tests, otherwise built from `settings`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime or Runtime(settings)
        app.state.runtime = rt
        async with contextlib.AsyncExitStack() as stack:
            if settings.metrics_port is not None:
                app.state.metrics_url = await stack.enter_async_context(
                    serve_metrics(rt.metrics.registry, settings.metrics_host, settings.metrics_port)
                )
            await stack.enter_async_context(rt.running())
            yield

    app = FastAPI(title="loragate", version="0.1.0", lifespan=lifespan)
    for router in ROUTERS:
        app.include_router(router)
    errors.install(app)
    _document(app)
    # Added innermost first: RequestContext wraps everything, BodyLimit wraps the routes.
    app.add_middleware(
        BodyLimit, limit_bytes=settings.max_body_bytes, pause_s=settings.body_timeout_s
    )
    app.add_middleware(RequestContext, on_proxied=lambda s: _observe_overhead(app, s))
    return app


def _observe_overhead(app: FastAPI, seconds: float) -> None:
    runtime: Runtime | None = getattr(app.state, "runtime", None)
    if runtime is not None:
        runtime.metrics.gateway_overhead_seconds.observe(seconds)


def _document(app: FastAPI) -> None:
    """The OpenAPI document, with the request bodies the generation routes parse themselves."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openai.document_request_bodies(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
