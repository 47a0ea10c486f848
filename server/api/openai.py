"""OpenAI-compatible routes: parse, call the gateway once, render.

The generation routes read the raw body and parse it with `parse_request` (pydantic from
JSON bytes: strict types, no NaN, no lone surrogates) rather than through FastAPI's body
parameters, which decode the JSON twice and accept what OpenAI refuses. Their request
schemas are added to the OpenAPI document by `document_request_bodies`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic.json_schema import models_json_schema

from server import jsonio
from server.api.deps import CatalogDep, GatewayDep, TaskHeader, TenantDep
from server.api.responses import ReleasingStreamingResponse
from server.protocol.openai import (
    ENGINE_PATHS,
    REQUEST_MODELS,
    Kind,
    ModelList,
    error_responses,
    generation_responses,
    parse_request,
)
from server.serving.gateway import Gateway
from server.serving.tenants import Tenant

router = APIRouter(prefix="/v1", tags=["openai"])
JSON = "application/json"


async def _serve(
    gateway: Gateway, kind: Kind, request: Request, tenant: Tenant, task: str | None
) -> Response:
    req = parse_request(kind, await request.body())
    if not req.stream:
        answer = await gateway.generate(kind, req, tenant, task)
        return Response(jsonio.dumps(answer.body), headers=answer.headers, media_type=JSON)
    streamed = await gateway.stream(kind, req, tenant, task)
    return ReleasingStreamingResponse(
        streamed.chunks,
        media_type="text/event-stream",
        headers=streamed.headers,
        on_close=streamed.close.aclose,
    )


@router.post("/completions", responses=generation_responses())
async def completions(
    request: Request, gateway: GatewayDep, tenant: TenantDep, task: TaskHeader = None
) -> Response:
    return await _serve(gateway, "completions", request, tenant, task)


@router.post("/chat/completions", responses=generation_responses())
async def chat_completions(
    request: Request, gateway: GatewayDep, tenant: TenantDep, task: TaskHeader = None
) -> Response:
    return await _serve(gateway, "chat", request, tenant, task)


@router.get("/models", responses=error_responses(401))
async def models(catalog: CatalogDep, tenant: TenantDep) -> ModelList:
    """The base (if the tenant may call it) and the adapters it may use, with versions."""
    return catalog.list_for(tenant)


def document_request_bodies(openapi: dict[str, Any]) -> dict[str, Any]:
    """Add the generation routes' JSON request bodies (and their models) to `openapi`."""
    kinds = list(REQUEST_MODELS.items())
    refs, defs = models_json_schema(
        [(model, "validation") for _, model in kinds],
        ref_template="#/components/schemas/{model}",
    )
    openapi.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
    for kind, model in kinds:
        operation = openapi["paths"][ENGINE_PATHS[kind]]["post"]
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(model, "validation")]}},
        }
    return openapi
