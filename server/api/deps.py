"""Dependency aliases: a route's signature reads as what it needs.

Every dependency is `async def`: FastAPI runs sync dependencies in its thread pool, which
would cost a thread hop per request for what is an attribute read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from server.releases.service import ReleaseService
from server.runtime import Runtime
from server.serving.auth import Admin, authenticate_admin
from server.serving.gateway import Gateway
from server.serving.models import ModelCatalog
from server.serving.tenants import Tenant


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_gateway(request: Request) -> Gateway:
    runtime: Runtime = request.app.state.runtime
    return runtime.gateway


async def get_catalog(request: Request) -> ModelCatalog:
    runtime: Runtime = request.app.state.runtime
    return runtime.catalog


async def get_tenant(request: Request) -> Tenant:
    """The caller's tenant from `Authorization: Bearer`; raises `Unauthorized` (401)."""
    runtime: Runtime = request.app.state.runtime
    return runtime.tenants.authenticate(request.headers.get("authorization"))


async def get_admin(request: Request) -> Admin:
    """The admin caller; raises `Forbidden` (403) when no admin token is configured,
    `Unauthorized` (401) for a missing or wrong token."""
    runtime: Runtime = request.app.state.runtime
    return authenticate_admin(runtime.settings.admin_token, request.headers.get("authorization"))


async def get_releases(request: Request) -> ReleaseService:
    runtime: Runtime = request.app.state.runtime
    return runtime.releases


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
GatewayDep = Annotated[Gateway, Depends(get_gateway)]
CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]
TenantDep = Annotated[Tenant, Depends(get_tenant)]
TaskHeader = Annotated[str | None, Header(alias="X-Task", max_length=64)]
AdminDep = Annotated[Admin, Depends(get_admin)]
ReleasesDep = Annotated[ReleaseService, Depends(get_releases)]
