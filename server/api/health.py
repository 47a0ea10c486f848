"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.api.deps import AdminDep, RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> Response:
    """Ready when the store is loaded and at least one engine answers its health check, and
    not draining (after SIGTERM: load balancers must stop sending)."""
    body = {
        "ready": runtime.ready(),
        "draining": runtime.draining,
        "engines_up": runtime.placement.up_engines(),
        "adapters": len(runtime.store.snapshot.adapters),
        "broken_store_entries": len(runtime.store.snapshot.broken),
    }
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(runtime: RuntimeDep, admin: AdminDep) -> Response:
    """On the API port, for the admin token only: the metrics name every tenant's adapters.
    Prometheus scrapes the metrics listener (settings.metrics_port) instead."""
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
