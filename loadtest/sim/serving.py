"""Completions and chat completions: request → Job, engine events → vLLM-shaped output.

Serialisation follows vLLM exactly: full responses are `model_dump()`; stream chunks are
`model_dump_json(exclude_unset=True)` (so only explicitly passed fields appear, nulls
included); the final usage chunk is `exclude_none=True`; a mid-stream error is
`json.dumps(ErrorResponse.model_dump())`; every stream ends with `data: [DONE]`.
Sources: vllm/entrypoints/openai/completion/serving.py (completion_stream_generator,
request_output_to_completion_response) and chat_completion/serving.py
(chat_completion_stream_generator, chat_completion_full_generator).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from loadtest.sim.engine import Job, SimEngine
from loadtest.sim.errors import SimError, sanitize_message
from loadtest.sim.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    ChatMessage,
    CompletionRequest,
    CompletionResponse,
    CompletionResponseChoice,
    CompletionResponseStreamChoice,
    CompletionStreamResponse,
    DeltaMessage,
    ErrorInfo,
    ErrorResponse,
    StreamOptions,
    UsageInfo,
    random_uuid,
)
from loadtest.sim.text import chat_prompt, completion_prompts

VLLM_VERSION = "0.32.0"
DONE = "data: [DONE]\n\n"


def error_response(exc: SimError) -> ErrorResponse:
    return ErrorResponse(
        error=ErrorInfo(
            message=sanitize_message(exc.message),
            type=exc.err_type,
            param=exc.param,
            code=exc.status.value,
        )
    )


def system_fingerprint(engine: SimEngine) -> str:
    """vllm/entrypoints/serve/utils/fingerprint.py "full" mode: vllm-<version>-<hash8>."""
    config = engine.config
    basis = f"{config.model}|{config.max_model_len}|{config.max_loras}|{config.max_lora_rank}"
    return f"vllm-{VLLM_VERSION}-{hashlib.sha256(basis.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Reply:
    """Per-response constants shared by every chunk."""

    request_id: str
    created: int  # unix seconds, the same on every chunk
    fingerprint: str
    include_usage: bool
    continuous_usage: bool

    @classmethod
    def make(
        cls, engine: SimEngine, prefix: str, header_id: str | None, options: StreamOptions | None
    ) -> Reply:
        # serve/engine/serving.py _base_request_id: X-Request-Id header, else random.
        include = bool(options and options.include_usage)
        return cls(
            request_id=f"{prefix}-{header_id or random_uuid()}",
            created=int(time.time()),
            fingerprint=system_fingerprint(engine),
            include_usage=include,
            continuous_usage=include and bool(options and options.continuous_usage_stats),
        )


def completion_job(engine: SimEngine, request: CompletionRequest) -> Job:
    assert request.prompt is not None  # CompletionRequest refuses a missing prompt
    return engine.plan(
        model=request.model,
        prompts=completion_prompts(request.prompt),
        n=request.n,
        max_tokens=request.max_tokens,
    )


def chat_job(engine: SimEngine, request: ChatCompletionRequest) -> Job:
    max_tokens: int | None
    if request.max_completion_tokens is not None:
        max_tokens, param = request.max_completion_tokens, "max_completion_tokens"
    else:
        max_tokens, param = request.max_tokens, "max_tokens"
    return engine.plan(
        model=request.model,
        prompts=[chat_prompt(request.messages)],
        n=request.n or 1,
        max_tokens=max_tokens,
        max_tokens_param=param,
    )


def chat_role(request: ChatCompletionRequest) -> str:
    """OpenAIServingChat.get_chat_request_role with vLLM's default response role."""
    if request.add_generation_prompt or not request.messages:
        return "assistant"
    return str(request.messages[-1].get("role", "assistant"))


async def collect(engine: SimEngine, job: Job) -> dict[int, str]:
    """Run a job to completion; the text of each choice by index."""
    texts = {choice.index: "" for choice in job.choices}
    async with aclosing(engine.generate(job)) as events:
        async for event in events:
            texts[event.choice] += event.text
    return texts


def _usage(prompt_tokens: int, completion_tokens: int) -> UsageInfo:
    return UsageInfo(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


def _final_usage(job: Job) -> UsageInfo:
    return _usage(job.prompt_tokens, sum(len(choice.pieces) for choice in job.choices))


def completion_response(job: Job, reply: Reply, texts: dict[int, str]) -> CompletionResponse:
    choices = [
        CompletionResponseChoice(
            index=choice.index, text=texts[choice.index], finish_reason=choice.finish_reason
        )
        for choice in job.choices
    ]
    return CompletionResponse(
        id=reply.request_id,
        created=reply.created,
        model=job.model,
        choices=choices,
        usage=_final_usage(job),
        system_fingerprint=reply.fingerprint,
    )


def chat_response(
    job: Job, reply: Reply, texts: dict[int, str], role: str
) -> ChatCompletionResponse:
    choices = [
        ChatCompletionResponseChoice(
            index=choice.index,
            message=ChatMessage(role=role, content=texts[choice.index]),
            finish_reason=choice.finish_reason,
        )
        for choice in job.choices
    ]
    return ChatCompletionResponse(
        id=reply.request_id,
        created=reply.created,
        model=job.model,
        choices=choices,
        usage=_final_usage(job),
        system_fingerprint=reply.fingerprint,
    )


def _sse(payload: str) -> str:
    return f"data: {payload}\n\n"


def _stream_error(exc: SimError) -> str:
    return _sse(json.dumps(error_response(exc).model_dump()))


async def completion_stream(engine: SimEngine, job: Job, reply: Reply) -> AsyncIterator[str]:
    """One chunk per token per choice, then the usage chunk if asked, then [DONE]."""
    prompt_tokens = {c.index: job.prompts[c.prompt_index].num_tokens for c in job.choices}
    sent = dict.fromkeys(prompt_tokens, 0)
    try:
        async with aclosing(engine.generate(job)) as events:
            async for event in events:
                sent[event.choice] += 1
                chunk = CompletionStreamResponse(
                    id=reply.request_id,
                    object="text_completion",
                    created=reply.created,
                    model=job.model,
                    choices=[
                        CompletionResponseStreamChoice(
                            index=event.choice,
                            text=event.text,
                            logprobs=None,
                            finish_reason=event.finish_reason,
                            stop_reason=None,
                            prompt_token_ids=None,
                            token_ids=None,
                        )
                    ],
                    **_chunk_extras(reply, event.finish_reason),
                )
                if reply.continuous_usage:
                    chunk.usage = _usage(prompt_tokens[event.choice], sent[event.choice])
                yield _sse(chunk.model_dump_json(exclude_unset=True))
        if reply.include_usage:
            final = CompletionStreamResponse(
                id=reply.request_id,
                created=reply.created,
                model=job.model,
                choices=[],
                usage=_final_usage(job),
                system_fingerprint=reply.fingerprint,
            )
            yield _sse(final.model_dump_json(exclude_unset=False, exclude_none=True))
    except SimError as exc:
        yield _stream_error(exc)
    yield DONE


async def chat_stream(engine: SimEngine, job: Job, reply: Reply, role: str) -> AsyncIterator[str]:
    """A role chunk per choice with the first output, one chunk per token, usage, [DONE]."""
    started = False
    sent = {choice.index: 0 for choice in job.choices}
    try:
        async with aclosing(engine.generate(job)) as events:
            async for event in events:
                if not started:
                    started = True
                    for index in sent:
                        yield _sse(_chat_role_chunk(job, reply, index, role))
                sent[event.choice] += 1
                yield _sse(
                    _chat_token_chunk(
                        job,
                        reply,
                        event.choice,
                        event.text,
                        event.finish_reason,
                        sent[event.choice],
                    )
                )
        if reply.include_usage:
            final = ChatCompletionStreamResponse(
                id=reply.request_id,
                object="chat.completion.chunk",
                created=reply.created,
                model=job.model,
                choices=[],
                usage=_final_usage(job),
                system_fingerprint=reply.fingerprint,
                metrics=None,
            )
            yield _sse(final.model_dump_json(exclude_unset=True, exclude_none=True))
    except SimError as exc:
        yield _stream_error(exc)
    yield DONE


def _chunk_extras(reply: Reply, finish_reason: str | None) -> dict[str, str]:
    # The fingerprint rides on the terminal chunk only when no usage chunk follows.
    if finish_reason is not None and not reply.include_usage:
        return {"system_fingerprint": reply.fingerprint}
    return {}


def _chat_role_chunk(job: Job, reply: Reply, index: int, role: str) -> str:
    chunk = ChatCompletionStreamResponse(
        id=reply.request_id,
        object="chat.completion.chunk",
        created=reply.created,
        choices=[
            ChatCompletionResponseStreamChoice(
                index=index,
                delta=DeltaMessage(role=role, content=""),
                logprobs=None,
                finish_reason=None,
            )
        ],
        model=job.model,
        prompt_token_ids=None,
        prompt_text=None,
    )
    if reply.continuous_usage:
        chunk.usage = _usage(job.prompt_tokens, 0)
    return chunk.model_dump_json(exclude_unset=True)


def _chat_token_chunk(
    job: Job, reply: Reply, index: int, text: str, finish_reason: str | None, sent: int
) -> str:
    if finish_reason is None:
        choice = ChatCompletionResponseStreamChoice(
            index=index,
            delta=DeltaMessage(content=text),
            logprobs=None,
            finish_reason=None,
            token_ids=None,
        )
    else:
        choice = ChatCompletionResponseStreamChoice(
            index=index,
            delta=DeltaMessage(content=text),
            logprobs=None,
            finish_reason=finish_reason,
            stop_reason=None,
            token_ids=None,
        )
    chunk = ChatCompletionStreamResponse(
        id=reply.request_id,
        object="chat.completion.chunk",
        created=reply.created,
        choices=[choice],
        model=job.model,
        **_chunk_extras(reply, finish_reason),
    )
    if reply.continuous_usage:
        chunk.usage = _usage(job.prompt_tokens, sent)
    return chunk.model_dump_json(exclude_unset=True)
