"""Dependency aliases: a route's signature reads as what it needs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from server.runtime import Runtime
from server.serving import Gateway
from server.tenants import Tenant


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_gateway(request: Request) -> Gateway:
    return get_runtime(request).gateway


def get_tenant(request: Request) -> Tenant:
    """The caller's tenant from `Authorization: Bearer`; raises `Unauthorized` (401)."""
    return get_runtime(request).tenants.authenticate(request.headers.get("authorization"))


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
GatewayDep = Annotated[Gateway, Depends(get_gateway)]
TenantDep = Annotated[Tenant, Depends(get_tenant)]
TaskHeader = Annotated[str | None, Header(alias="X-Task", max_length=64)]
