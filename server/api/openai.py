"""OpenAI-compatible routes: parse, call the gateway once, render."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from server.deps import GatewayDep, RuntimeDep
from server.protocol import ChatCompletionRequest, CompletionRequest, Kind, OpenAIRequest
from server.serving import Gateway
from server.streaming import ReleasingStreamingResponse

router = APIRouter(prefix="/v1", tags=["openai"])


async def _serve(gateway: Gateway, kind: Kind, req: OpenAIRequest) -> Response:
    if not req.stream:
        answer = await gateway.generate(kind, req)
        return JSONResponse(answer.body, headers=answer.headers)
    streamed = await gateway.stream(kind, req)
    return ReleasingStreamingResponse(
        streamed.chunks, media_type="text/event-stream", headers=streamed.headers,
        on_close=streamed.close.aclose,
    )  # fmt: skip


@router.post("/completions")
async def completions(req: CompletionRequest, gateway: GatewayDep) -> Response:
    return await _serve(gateway, "completions", req)


@router.post("/chat/completions")
async def chat_completions(req: ChatCompletionRequest, gateway: GatewayDep) -> Response:
    return await _serve(gateway, "chat", req)


@router.get("/models")
async def models(runtime: RuntimeDep) -> dict[str, Any]:
    """The base model and every adapter (OpenAI list shape, plus version metadata)."""
    base = runtime.settings.base_model
    data: list[dict[str, Any]] = [
        {"id": base, "object": "model", "created": 0, "owned_by": "loragate", "root": base,
         "parent": None},
    ]  # fmt: skip
    resident = {s.key for name in runtime.registry.engines for s in runtime.registry.view(name)}
    for adapter in runtime.store.snapshot.adapters.values():
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
        })  # fmt: skip
    return {"object": "list", "data": data}
