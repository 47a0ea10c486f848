"""Dependency aliases: a route's signature reads as what it needs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.runtime import Runtime
from server.serving import Gateway


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_gateway(request: Request) -> Gateway:
    return get_runtime(request).gateway


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
GatewayDep = Annotated[Gateway, Depends(get_gateway)]
