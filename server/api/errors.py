"""The one mapping from loragate's errors to HTTP: OpenAI's error JSON and status.

Services raise `LoragateError` subclasses; FastAPI's own errors (validation, unknown routes,
wrong methods) are mapped to the same envelope. Exceptions nobody expected are answered by
`server.api.middleware.RequestContext` (a 500 that keeps the connection usable).
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.errors import InvalidRequest, LoragateError, PayloadTooLarge, UnknownRoute


def json_error(exc: LoragateError, status: int | None = None) -> JSONResponse:
    """`{"error": {message, type, param, code}}` with the error's status and Retry-After."""
    headers = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    return JSONResponse(exc.to_openai(), status_code=status or exc.status, headers=headers)


async def _on_loragate(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoragateError)
    return json_error(exc)


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid body"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    return json_error(InvalidRequest(f"{param or 'body'}: {first['msg']}", param=param))


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    error: LoragateError
    if exc.status_code == 404:
        error = UnknownRoute(f"no route {request.url.path}")
    elif exc.status_code == 413:
        error = PayloadTooLarge(str(exc.detail))
    else:
        error = InvalidRequest(str(exc.detail))
    return json_error(error, exc.status_code)


def install(app: FastAPI) -> None:
    app.add_exception_handler(LoragateError, _on_loragate)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
