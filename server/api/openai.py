"""OpenAI-compatible routes: parse, call the gateway once, render."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from server.api.deps import CatalogDep, GatewayDep, TaskHeader, TenantDep
from server.api.responses import ReleasingStreamingResponse
from server.protocol.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    Kind,
    ModelList,
    OpenAIRequest,
    error_responses,
    generation_responses,
)
from server.serving.gateway import Gateway
from server.serving.tenants import Tenant

router = APIRouter(prefix="/v1", tags=["openai"])


async def _serve(
    gateway: Gateway, kind: Kind, req: OpenAIRequest, tenant: Tenant, task: str | None
) -> Response:
    if not req.stream:
        answer = await gateway.generate(kind, req, tenant, task)
        return JSONResponse(answer.body, headers=answer.headers)
    streamed = await gateway.stream(kind, req, tenant, task)
    return ReleasingStreamingResponse(
        streamed.chunks,
        media_type="text/event-stream",
        headers=streamed.headers,
        on_close=streamed.close.aclose,
    )


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


@router.get("/models", responses=error_responses(401))
async def models(catalog: CatalogDep, tenant: TenantDep) -> ModelList:
    """The base (if the tenant may call it) and the adapters it may use, with versions."""
    return catalog.list_for(tenant)
