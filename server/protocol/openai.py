"""OpenAI request models (what the gateway reads; everything else passes through to vLLM)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Kind = Literal["completions", "chat"]
ENGINE_PATHS: dict[Kind, str] = {
    "completions": "/v1/completions",
    "chat": "/v1/chat/completions",
}


class OpenAIRequest(BaseModel):
    """Fields the gateway acts on; unknown fields are kept and forwarded (vLLM extensions)."""

    model_config = ConfigDict(extra="allow")

    # Absent, empty or "auto": routed by the X-Task header or the tenant's default.
    model: str | None = Field(None, max_length=256)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    user: str | None = Field(None, max_length=256)

    def engine_body(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class CompletionRequest(OpenAIRequest):
    prompt: str | list[str] | list[int] | list[list[int]]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str = Field(min_length=1)
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(OpenAIRequest):
    messages: list[ChatMessage] = Field(min_length=1)


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope; every non-2xx answer has this shape."""

    error: ErrorBody


class Choice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    finish_reason: str | None = None


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_tokens: int
    completion_tokens: int | None = None
    total_tokens: int


class CompletionResponse(BaseModel):
    """What the engine answers (passed through; documented loosely, extra fields allowed)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None


class ModelVersion(BaseModel):
    version: str
    created_at: str  # ISO 8601
    resident: bool  # loaded on at least one engine now


class CanaryInfo(BaseModel):
    version: str
    weight: float


class ModelCard(BaseModel):
    """An entry of `/v1/models` as vLLM lists it (`parent` is None for the base model)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "loragate"
    root: str
    parent: str | None


class AdapterCard(ModelCard):
    """An adapter's entry: its release channels, versions, and the caller's task aliases."""

    stable: str | None
    previous: str | None
    canary: CanaryInfo | None
    versions: list[ModelVersion]
    tasks: list[str]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AdapterCard | ModelCard]


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for error statuses (all OpenAI's error envelope)."""
    return {status: {"model": ErrorResponse} for status in statuses}


def generation_responses() -> dict[int | str, dict[str, Any]]:
    """A completion is JSON, or SSE when `stream` is true."""
    return {
        200: {
            "model": CompletionResponse,
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **error_responses(400, 401, 403, 404, 413, 429, 502, 503, 504),
    }
