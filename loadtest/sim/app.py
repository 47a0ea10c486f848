"""HTTP surface of the simulated engine: vLLM's routes plus /sim/* for tests.

Routes parse, call one engine/serving function, and render. Route behaviour follows
vllm/entrypoints/openai/{models,completion,chat_completion}/api_router.py and
vllm/entrypoints/serve/{lora,instrumentator}/ (health, metrics, LoRA admin).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from loadtest.sim import serving
from loadtest.sim.config import SimConfig
from loadtest.sim.engine import SimEngine
from loadtest.sim.errors import InvalidUserInput, SimError, validation_message
from loadtest.sim.metrics import build_registry, render
from loadtest.sim.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    ErrorInfo,
    ErrorResponse,
    LoadLoRAAdapterRequest,
    ModelCard,
    ModelList,
    ModelPermission,
    UnloadLoRAAdapterRequest,
)


def get_engine_of(app: FastAPI) -> SimEngine:
    engine: SimEngine = app.state.engine
    return engine


def get_engine(request: Request) -> SimEngine:
    return get_engine_of(request.app)


EngineDep = Annotated[SimEngine, Depends(get_engine)]


async def require_json(request: Request) -> None:
    """vllm/entrypoints/serve/utils/api_utils.py validate_json_request."""
    media_type = request.headers.get("content-type", "").lower().split(";", maxsplit=1)[0]
    if media_type != "application/json":
        raise RequestValidationError(
            errors=["Unsupported Media Type: Only 'application/json' is allowed"]
        )


JSON_ONLY = [Depends(require_json)]
router = APIRouter()


@router.get("/health")
async def health(engine: EngineDep) -> Response:
    return Response(status_code=503 if engine.faults.unhealthy else 200)


@router.get("/version")
async def show_version() -> JSONResponse:
    return JSONResponse(content={"version": serving.VLLM_VERSION})


@router.get("/v1/models")
async def show_available_models(engine: EngineDep) -> JSONResponse:
    return JSONResponse(content=model_list(engine).model_dump())


@router.post("/v1/load_lora_adapter", dependencies=JSON_ONLY)
async def load_lora_adapter(body: LoadLoRAAdapterRequest, engine: EngineDep) -> Response:
    text = await engine.load_adapter(body.lora_name, body.lora_path, load_inplace=body.load_inplace)
    return Response(status_code=200, content=text)  # plain text, no content type, as vLLM


@router.post("/v1/unload_lora_adapter", dependencies=JSON_ONLY)
async def unload_lora_adapter(body: UnloadLoRAAdapterRequest, engine: EngineDep) -> Response:
    return Response(status_code=200, content=await engine.unload_adapter(body.lora_name))


@router.post("/v1/completions", dependencies=JSON_ONLY)
async def create_completion(
    body: CompletionRequest, request: Request, engine: EngineDep
) -> Response:
    return await cancel_on_disconnect(request, _completion(body, request, engine))


@router.post("/v1/chat/completions", dependencies=JSON_ONLY)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, engine: EngineDep
) -> Response:
    return await cancel_on_disconnect(request, _chat(body, request, engine))


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(render(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/sim/stats")
async def sim_stats(engine: EngineDep) -> dict[str, Any]:
    return engine.snapshot()


@router.get("/sim/faults")
async def get_faults(engine: EngineDep) -> dict[str, Any]:
    return engine.faults.model_dump()


@router.post("/sim/faults")
async def set_faults(
    changes: Annotated[dict[str, Any], Body()], engine: EngineDep
) -> dict[str, Any]:
    """Change only the fields present; answers the faults now in force."""
    try:
        engine.faults = engine.faults.merged(changes)
    except ValidationError as exc:
        raise InvalidUserInput(str(exc)) from exc
    return engine.faults.model_dump()


async def _completion(body: CompletionRequest, request: Request, engine: SimEngine) -> Response:
    job = serving.completion_job(engine, body)
    reply = serving.Reply.make(
        engine, "cmpl", request.headers.get("X-Request-Id"), body.stream_options
    )
    await engine.preflight(job)
    if body.stream:
        stream = serving.completion_stream(engine, job, reply)
        return StreamingResponse(stream, media_type="text/event-stream")
    texts = await serving.collect(engine, job)
    return JSONResponse(serving.completion_response(job, reply, texts).model_dump())


async def _chat(body: ChatCompletionRequest, request: Request, engine: SimEngine) -> Response:
    job = serving.chat_job(engine, body)
    reply = serving.Reply.make(
        engine, "chatcmpl", request.headers.get("X-Request-Id"), body.stream_options
    )
    role = serving.chat_role(body)
    await engine.preflight(job)
    if body.stream:
        stream = serving.chat_stream(engine, job, reply, role)
        return StreamingResponse(stream, media_type="text/event-stream")
    texts = await serving.collect(engine, job)
    return JSONResponse(serving.chat_response(job, reply, texts, role).model_dump())


async def cancel_on_disconnect(request: Request, work: Awaitable[Response]) -> Response:
    """vllm/entrypoints/serve/utils/api_utils.py with_cancellation: race the handler
    against the client going away and cancel the loser. Once a StreamingResponse is
    returned, Starlette itself cancels the stream on disconnect."""
    handler = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    done, pending = await asyncio.wait({handler, watcher}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if handler in done:
        return handler.result()
    return Response(status_code=499)  # nobody is listening; nginx's "client closed" code


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def model_list(engine: SimEngine) -> ModelList:
    """OpenAIServingModels.show_available_models: the base card, then one per LoRA."""
    config = engine.config
    base = ModelCard(
        id=config.model,
        max_model_len=config.max_model_len,
        root=config.model,
        permission=[ModelPermission()],
    )
    loras = [
        ModelCard(id=a.name, root=a.path, parent=config.model, permission=[ModelPermission()])
        for a in engine.adapters
    ]
    return ModelList(data=[base, *loras])


def _error_json(error: ErrorInfo) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=error).model_dump(), status_code=error.code)


async def _on_sim_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SimError)
    return _error_json(serving.error_response(exc).error)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    """vllm/entrypoints/serve/exception_handling/handlers/validation.py: 400, type
    "Bad Request", param from the first error's location."""
    assert isinstance(exc, RequestValidationError)
    message, param = validation_message(list(exc.errors()))
    return _error_json(ErrorInfo(message=message, type="Bad Request", param=param, code=400))


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The engine learns its loop so another thread can abort in-flight work on shutdown.
    get_engine_of(app).bind_loop(asyncio.get_running_loop())
    yield


def create_app(config: SimConfig) -> FastAPI:
    """A fresh app with its own engine and metrics registry (nothing shared globally)."""
    app = FastAPI(
        title="loragate simulated vLLM engine", docs_url=None, redoc_url=None, lifespan=_lifespan
    )
    app.state.engine = SimEngine(config)
    app.state.metrics_registry = build_registry(app.state.engine)
    app.include_router(router)
    app.add_exception_handler(SimError, _on_sim_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    return app
