"""Dependency aliases: a route's signature reads as what it needs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from server.admin_auth import Admin, authenticate_admin
from server.releases import ReleaseService
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


def get_admin(request: Request) -> Admin:
    """The admin caller; raises `Forbidden` (403) when no admin token is configured,
    `Unauthorized` (401) for a missing or wrong token."""
    token = get_runtime(request).settings.admin_token
    return authenticate_admin(token, request.headers.get("authorization"))


def get_releases(request: Request) -> ReleaseService:
    return get_runtime(request).releases


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
GatewayDep = Annotated[Gateway, Depends(get_gateway)]
TenantDep = Annotated[Tenant, Depends(get_tenant)]
TaskHeader = Annotated[str | None, Header(alias="X-Task", max_length=64)]
AdminDep = Annotated[Admin, Depends(get_admin)]
ReleasesDep = Annotated[ReleaseService, Depends(get_releases)]
