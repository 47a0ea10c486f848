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
