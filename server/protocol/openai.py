"""OpenAI request models (what the gateway reads; everything else passes through to vLLM)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from server.errors import InvalidRequest

Kind = Literal["completions", "chat"]
ENGINE_PATHS: dict[Kind, str] = {
    "completions": "/v1/completions",
    "chat": "/v1/chat/completions",
}


INT64 = 2**63 - 1
MAX_STOP = 16  # stop sequences; OpenAI allows 4, vLLM any number


class StreamOptions(BaseModel):
    """`stream_options`: vLLM's fields only; anything else is a 400, not silently ignored."""

    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


class OpenAIRequest(BaseModel):
    """The fields the gateway acts on, typed strictly as OpenAI does (`"10"` is not an
    integer, `"yes"` not a boolean, no NaN or infinity); unknown fields are kept and
    forwarded (vLLM's extensions), checked by `check_values` for the same JSON hazards."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    # Absent, empty or "auto": routed by the X-Task header or the tenant's default.
    model: str | None = Field(None, max_length=256)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=INT64)
    n: int | None = Field(None, ge=1, le=INT64)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    seed: int | None = Field(None, ge=-INT64 - 1, le=INT64)
    stop: str | list[str] | None = Field(None, max_length=MAX_STOP)
    user: str | None = Field(None, max_length=256)
    prompt_logprobs: int | None = Field(None, ge=-1, le=INT64)
    use_beam_search: bool | None = None

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> Self:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    def engine_body(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)

    @property
    def choices(self) -> int:
        """Completions generated per prompt."""
        return self.n or 1


class CompletionRequest(OpenAIRequest):
    # A text, a batch of texts, token ids, or a batch of token-id lists; none of them empty.
    prompt: (
        str
        | Annotated[list[str], Field(min_length=1)]
        | Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
        | Annotated[
            list[Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]],
            Field(min_length=1),
        ]
    )
    logprobs: int | None = Field(None, ge=0, le=INT64)
    best_of: int | None = Field(None, ge=1, le=INT64)
    echo: bool | None = None
    suffix: str | None = None

    @property
    def choices(self) -> int:
        return max(self.n or 1, self.best_of or 1)


class ContentPart(BaseModel):
    """One part of a message's content (`{"type": "text", "text": …}`, images, …)."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: str = Field(min_length=1, max_length=64)
    text: str | None = None

    @model_validator(mode="after")
    def _text_parts_have_text(self) -> Self:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs a text string")
        return self


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(None, max_length=256)


class ChatCompletionRequest(OpenAIRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=INT64)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=INT64)


def check_values(value: object, where: str) -> None:
    """Raise `ValueError` naming the field if an untyped (forwarded) value holds a number
    that is not finite; JSON parsing already refused invalid strings (lone surrogates)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: numbers must be finite")
    if isinstance(value, dict):
        for key, item in value.items():
            check_values(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_values(item, f"{where}.{i}")


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


REQUEST_MODELS: dict[Kind, type[OpenAIRequest]] = {
    "completions": CompletionRequest,
    "chat": ChatCompletionRequest,
}
PROMPT_SHAPES = (
    "prompt must be a string, or a non-empty list of strings, of token ids (integers >= 0), "
    "or of non-empty token-id lists"
)
CONTENT_SHAPES = "content must be a string, a list of content parts, or null"
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def parse_request(kind: Kind, raw: bytes) -> OpenAIRequest:
    """The request of `kind` from its JSON body; raises `InvalidRequest` naming the parameter
    for invalid JSON (lone surrogates included), wrong types, out-of-range or non-finite
    numbers, and unknown shapes."""
    try:
        request = REQUEST_MODELS[kind].model_validate_json(raw)
    except ValidationError as exc:
        raise _invalid(exc) from None
    try:
        check_values(request.model_extra, "body")
        if isinstance(request, ChatCompletionRequest):
            for i, message in enumerate(request.messages):
                check_values(message.model_extra, f"messages.{i}")
                for j, part in enumerate(message.content or ()):
                    if isinstance(part, ContentPart):
                        check_values(part.model_extra, f"messages.{i}.content.{j}")
    except ValueError as exc:
        where, _, why = str(exc).partition(": ")
        param = where.removeprefix("body.") if where != "body" else None
        raise InvalidRequest(f"{param}: {why}", param=param) from None
    return request


def _invalid(exc: ValidationError) -> InvalidRequest:
    errors = exc.errors()
    if errors[0]["type"] == "json_invalid":
        return InvalidRequest(f"the body is not valid JSON: {errors[0]['ctx']['error']}")
    # A union (prompt, content) reports one error per member: the deepest is the telling one.
    worst = max(errors, key=lambda e: len(_path(e["loc"])))
    parts = _path(worst["loc"])
    param = ".".join(parts) or None
    if parts and parts[0] == "prompt" and worst["type"] != "missing":
        return InvalidRequest(PROMPT_SHAPES, param="prompt")
    if len(parts) == 3 and parts[2] == "content":
        return InvalidRequest(f"{param}: {CONTENT_SHAPES}", param=param)
    message = str(worst["msg"]).removeprefix("Value error, ")
    return InvalidRequest(f"{param or 'body'}: {message}", param=param)


def _path(loc: tuple[int | str, ...]) -> list[str]:
    """A pydantic error location without the union-member tags (`str`, `list[int]`, …)."""
    return [
        str(p)
        for p in loc
        if isinstance(p, int) or not ("[" in p or p in _TYPE_TAGS or p.startswith("function-"))
    ]
