"""`create_app(settings)`: routers, middleware, the one error mapping, and the lifespan."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from server import logs
from server.api import admin, health, openai
from server.errors import InvalidRequest, LoragateError, PayloadTooLarge, UnknownRoute
from server.runtime import Runtime
from server.settings import Settings

log = logging.getLogger(__name__)
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def error_response(exc: LoragateError) -> JSONResponse:
    """The one mapping from loragate's errors to HTTP: OpenAI's error JSON + status."""
    headers = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    return JSONResponse(exc.to_openai(), status_code=exc.status, headers=headers)


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
    _install_error_handlers(app)
    _install_middleware(app, settings)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    async def on_loragate(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoragateError)
        return error_response(exc)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid body"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        return error_response(InvalidRequest(f"{param or 'body'}: {first['msg']}", param=param))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error: LoragateError
        if exc.status_code == 404:
            error = UnknownRoute(f"no route {request.url.path}")
        else:
            error = InvalidRequest(str(exc.detail))
        response = error_response(error)
        response.status_code = exc.status_code
        return response

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", extra={"path": request.url.path})
        return error_response(LoragateError("internal error; see the gateway log"))

    app.add_exception_handler(LoragateError, on_loragate)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


def _install_middleware(app: FastAPI, settings: Settings) -> None:
    body_limit = settings.max_body_bytes

    @app.middleware("http")
    async def request_context(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        incoming = request.headers.get("x-request-id", "")
        rid = incoming if _REQUEST_ID_RE.fullmatch(incoming) else uuid.uuid4().hex
        token = logs.request_id.set(rid)
        try:
            length = request.headers.get("content-length")
            upload = admin.UPLOAD_PATH_RE.fullmatch(request.url.path) and request.method == "POST"
            limit = settings.max_upload_bytes if upload else body_limit
            if length is not None and (not length.isdigit() or int(length) > limit):
                response: Response = error_response(
                    PayloadTooLarge(f"request body over {limit} bytes")
                )
            else:
                response = await call_next(request)
        finally:
            logs.request_id.reset(token)
        response.headers["X-Request-Id"] = rid
        return response
