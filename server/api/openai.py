"""OpenAI-compatible routes: parse, call the gateway once, render."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from server.deps import GatewayDep, RuntimeDep, TaskHeader, TenantDep
from server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    Kind,
    ModelList,
    OpenAIRequest,
    error_responses,
    generation_responses,
)
from server.serving import Gateway
from server.streaming import ReleasingStreamingResponse
from server.tenants import Tenant

router = APIRouter(prefix="/v1", tags=["openai"])


async def _serve(
    gateway: Gateway, kind: Kind, req: OpenAIRequest, tenant: Tenant, task: str | None
) -> Response:
    if not req.stream:
        answer = await gateway.generate(kind, req, tenant, task)
        return JSONResponse(answer.body, headers=answer.headers)
    streamed = await gateway.stream(kind, req, tenant, task)
    return ReleasingStreamingResponse(
        streamed.chunks, media_type="text/event-stream", headers=streamed.headers,
        on_close=streamed.close.aclose,
    )  # fmt: skip


@router.post("/completions", responses=generation_responses())
async def completions(
    req: CompletionRequest, gateway: GatewayDep, tenant: TenantDep, task: TaskHeader = None
) -> Response:
    return await _serve(gateway, "completions", req, tenant, task)


@router.post("/chat/completions", responses=generation_responses())
async def chat_completions(
    req: ChatCompletionRequest, gateway: GatewayDep, tenant: TenantDep, task: TaskHeader = None
) -> Response:
    return await _serve(gateway, "chat", req, tenant, task)


@router.get("/models", response_model=ModelList, responses=error_responses(401))
async def models(runtime: RuntimeDep, tenant: TenantDep) -> dict[str, Any]:
    """The base (if the tenant may call it) and the adapters it may use, with versions."""
    base = runtime.settings.base_model
    data: list[dict[str, Any]] = []
    if tenant.allow_base:
        data.append({"id": base, "object": "model", "created": 0, "owned_by": "loragate",
                     "root": base, "parent": None})  # fmt: skip
    resident = {s.key for name in runtime.registry.engines for s in runtime.registry.view(name)}
    aliases: dict[str, list[str]] = {}
    for task, target in tenant.tasks.items():
        aliases.setdefault(target.partition("@")[0], []).append(task)
    for adapter in runtime.store.snapshot.adapters.values():
        if not tenant.may_use(adapter.name):
            continue
        ch = adapter.channels
        versions = [
            {"version": v.version, "created_at": v.manifest.created_at.isoformat(),
             "resident": v.engine_name in resident}
            for v in adapter.versions.values()
        ]  # fmt: skip
        data.append({
            "id": adapter.name, "object": "model", "owned_by": "loragate", "root": base,
            "parent": base, "created": int(min(
                (v.manifest.created_at.timestamp() for v in adapter.versions.values()),
                default=0)),
            "stable": ch.stable, "previous": ch.previous,
            "canary": ch.canary.model_dump() if ch.canary else None, "versions": versions,
            "tasks": sorted(aliases.get(adapter.name, [])),
        })  # fmt: skip
    return {"object": "list", "data": data}
