"""`create_app(settings)`: routers, middleware, the error mapping, and the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from server.api import admin, errors, health, openai
from server.api.middleware import BodyLimit, RequestContext
from server.runtime import Runtime
from server.settings import Settings


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """A gateway app; `runtime` may be given by tests, otherwise built from `settings`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = runtime or Runtime(settings)
        app.state.runtime = rt
        async with rt.running():
            yield

    app = FastAPI(title="loragate", version="0.1.0", lifespan=lifespan)
    app.include_router(openai.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    errors.install(app)
    # Added innermost first: RequestContext wraps everything, BodyLimit wraps the routes.
    app.add_middleware(BodyLimit, limit_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContext)
    return app
