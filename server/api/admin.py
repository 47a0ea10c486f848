"""Admin routes (bearer `LORAGATE_ADMIN_TOKEN`): parse, call the release service once, render.

Every route takes `AdminDep`: a caller without the token gets 401 (403 when the admin API is
disabled) before anything is changed. (FastAPI parses a JSON body before dependencies run, so
a malformed JSON body is a 400 even without a token; uploads are read only after the check.)
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from server.api.deps import AdminDep, ReleasesDep, RuntimeDep
from server.api.middleware import allow_body
from server.errors import InvalidRequest
from server.protocol.admin import (
    AdapterListing,
    CanaryRequest,
    PromoteRequest,
    RegisterInPlace,
    ShadowRequest,
)
from server.releases.results import ChangeResult, PrewarmResult, RetireResult
from server.store.snapshot import AdapterVersion

# Not in the public OpenAPI document: it would list the admin API to every caller.
router = APIRouter(prefix="/admin", tags=["admin"], include_in_schema=False)


def _registered(found: AdapterVersion) -> JSONResponse:
    body = {
        "adapter": found.name,
        "version": found.version,
        "created_at": found.manifest.created_at.isoformat(),
        "files": sorted(found.manifest.files),
    }
    return JSONResponse(body, status_code=201)


@router.get("/adapters")
async def list_adapters(admin: AdminDep, releases: ReleasesDep) -> AdapterListing:
    return await releases.describe()


@router.post("/adapters/{name}/versions")
async def register_version(
    admin: AdminDep,
    releases: ReleasesDep,
    runtime: RuntimeDep,
    name: str,
    request: Request,
    version: Annotated[str | None, Query(max_length=64)] = None,
) -> JSONResponse:
    """multipart/form-data: upload a version's files; JSON `{"version"}`: validate a
    directory already copied to `<store>/<name>/<version>`."""
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        allow_body(request.scope, runtime.settings.max_upload_bytes)
        found = await releases.register_upload(
            name, content_type, request.stream(), version=version, actor=admin.actor
        )
        return _registered(found)
    raw = await request.body()  # bounded by the BodyLimit middleware (max_body_bytes)
    try:
        req = RegisterInPlace.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidRequest(
            f"{where}: {first['msg']} (send multipart files, or JSON "
            '{"version": ...} for a directory already in the store)'
        ) from None
    return _registered(await releases.register_in_place(name, req.version, actor=admin.actor))


@router.post("/adapters/{name}/promote")
async def promote(
    admin: AdminDep, releases: ReleasesDep, name: str, req: PromoteRequest
) -> ChangeResult:
    return await releases.promote(
        name, req.version, actor=admin.actor, force=req.force, dataset=req.dataset
    )


@router.post("/adapters/{name}/rollback")
async def rollback(admin: AdminDep, releases: ReleasesDep, name: str) -> ChangeResult:
    return await releases.rollback(name, actor=admin.actor)


@router.post("/adapters/{name}/canary")
async def canary(
    admin: AdminDep, releases: ReleasesDep, name: str, req: CanaryRequest
) -> ChangeResult:
    return await releases.canary(
        name, req.version, req.weight, actor=admin.actor, bounds=req.bounds()
    )


@router.post("/adapters/{name}/shadow")
async def shadow(
    admin: AdminDep, releases: ReleasesDep, name: str, req: ShadowRequest
) -> ChangeResult:
    return await releases.shadow(name, req.version, req.share, actor=admin.actor)


@router.post("/adapters/{name}/versions/{version}/pin")
async def pin(admin: AdminDep, releases: ReleasesDep, name: str, version: str) -> ChangeResult:
    return await releases.pin(name, version, actor=admin.actor, pinned=True)


@router.post("/adapters/{name}/versions/{version}/unpin")
async def unpin(admin: AdminDep, releases: ReleasesDep, name: str, version: str) -> ChangeResult:
    return await releases.pin(name, version, actor=admin.actor, pinned=False)


@router.post("/adapters/{name}/versions/{version}/prewarm")
async def prewarm(admin: AdminDep, releases: ReleasesDep, name: str, version: str) -> PrewarmResult:
    return await releases.prewarm(name, version)


@router.delete("/adapters/{name}/versions/{version}")
async def retire(admin: AdminDep, releases: ReleasesDep, name: str, version: str) -> RetireResult:
    return await releases.retire(name, version, actor=admin.actor)


@router.get("/audit")
async def audit(
    admin: AdminDep,
    releases: ReleasesDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> dict[str, Any]:
    """The last `limit` audit entries, oldest first: who, what, from/to, forced, when."""
    entries = await releases.audit(limit)
    return {"entries": [e.model_dump(mode="json") for e in entries]}
