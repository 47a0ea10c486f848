"""Turning a client's request into the engine's body: the caps on what it may buy, then
the version's prompt template. Pure functions over the parsed request and a plain dict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.errors import InvalidRequest
from server.protocol.openai import ChatCompletionRequest, CompletionRequest, Kind, OpenAIRequest
from server.serving.routing import Target
from server.serving.tenants import Tenant

CHARS_PER_TOKEN = 4  # for estimating a text prompt's tokens before the engine counts them
DEFAULT_COMPLETION_TOKENS = 16  # vLLM's default max_tokens for completions


@dataclass(frozen=True)
class Caps:
    """What one request may buy. The gateway's caps, lowered by the tenant's own."""

    max_tokens: int | None
    max_n: int
    max_logprobs: int
    max_prompt_chars: int
    max_prompt_tokens: int

    def for_tenant(self, tenant: Tenant) -> Caps:
        def lower(mine: int | None, theirs: int | None) -> int | None:
            return theirs if mine is None else min(mine, theirs or mine)

        return Caps(
            max_tokens=lower(self.max_tokens, tenant.max_tokens),
            max_n=min(self.max_n, tenant.max_n or self.max_n),
            max_logprobs=self.max_logprobs
            if tenant.max_logprobs is None
            else min(self.max_logprobs, tenant.max_logprobs),
            max_prompt_chars=min(
                self.max_prompt_chars, tenant.max_prompt_chars or self.max_prompt_chars
            ),
            max_prompt_tokens=min(
                self.max_prompt_tokens, tenant.max_prompt_tokens or self.max_prompt_tokens
            ),
        )


@dataclass(frozen=True)
class Cost:
    """What a request asks for, in tokens, before the engine has counted anything."""

    prompt_tokens: int  # exact for token ids, estimated for text
    completion_tokens: int  # the most it may generate: max tokens x completions

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def apply_caps(kind: Kind, req: OpenAIRequest, body: dict[str, Any], caps: Caps) -> Cost:
    """Check every field that buys compute against `caps` and fill in the max-tokens cap
    when the client sent none. Raises `InvalidRequest` (400) naming the parameter."""
    prompts, prompt_tokens = _check_prompt(req, caps)
    choices = req.choices * prompts
    if choices > caps.max_n:
        param = "best_of" if isinstance(req, CompletionRequest) and req.best_of else "n"
        raise _over(param, f"{choices} completions", caps.max_n)
    _check_logprobs(req, caps.max_logprobs)
    max_new = _cap_max_tokens(kind, req, body, caps.max_tokens)
    return Cost(prompt_tokens, max_new * choices)


def _cap_max_tokens(kind: Kind, req: OpenAIRequest, body: dict[str, Any], cap: int | None) -> int:
    fields = ["max_tokens"] + (["max_completion_tokens"] if kind == "chat" else [])
    asked = {f: v for f in fields if (v := getattr(req, f, None)) is not None}
    if cap is not None:
        for field, value in asked.items():
            if value > cap:
                raise _over(field, str(value), cap)
        if not asked:
            body[fields[-1]] = cap
    if kind == "chat" and "max_completion_tokens" in asked:
        return int(asked["max_completion_tokens"])
    return int(next(iter(asked.values()), cap or DEFAULT_COMPLETION_TOKENS))


def _check_logprobs(req: OpenAIRequest, cap: int) -> None:
    asked: dict[str, int | None] = {"prompt_logprobs": req.prompt_logprobs}
    if isinstance(req, CompletionRequest):
        asked["logprobs"] = req.logprobs
    elif isinstance(req, ChatCompletionRequest):
        asked["top_logprobs"] = req.top_logprobs
    for field, value in asked.items():
        if value is not None and (value > cap or value < 0):  # -1: the whole vocabulary
            raise _over(field, str(value), cap)


def _check_prompt(req: OpenAIRequest, caps: Caps) -> tuple[int, int]:
    """(prompts in the request, its prompt tokens, estimated for text)."""
    if isinstance(req, CompletionRequest):
        prompt = req.prompt
        items: list[Any] = prompt if isinstance(prompt, list) else [prompt]
        if items and isinstance(items[0], int):
            items = [items]  # one prompt of token ids
        texts = [p for p in items if isinstance(p, str)]
        ids = sum(len(p) for p in items if isinstance(p, list))
        param, count = "prompt", len(items)
    else:
        assert isinstance(req, ChatCompletionRequest)
        texts = [_message_text(m.content) for m in req.messages]
        ids, param, count = 0, "messages", 1
    chars = sum(len(t) for t in texts)
    if chars > caps.max_prompt_chars:
        raise _over(param, f"{chars} characters of prompt", caps.max_prompt_chars)
    if ids > caps.max_prompt_tokens:
        raise _over(param, f"{ids} prompt token ids", caps.max_prompt_tokens)
    return count, ids + -(-chars // CHARS_PER_TOKEN)


def _message_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(getattr(part, "text", None) or "" for part in content)
    return ""


def _over(param: str, asked: str, cap: int) -> InvalidRequest:
    return InvalidRequest(f"{param}: {asked} is over this key's limit of {cap}", param=param)


def apply_template(target: Target, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
    """The version's prompt template: `{input}` around completion prompts and the last user
    message of a chat; its system prompt first when the chat has none. The base model has
    no template."""
    template = target.template
    if template is None:
        return body
    if kind == "completions":
        prompt = body["prompt"]
        if isinstance(prompt, str):
            body["prompt"] = template.render(prompt)
        elif isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
            body["prompt"] = [template.render(p) for p in prompt]
        return body
    messages = body["messages"]
    for message in reversed(messages):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            message["content"] = template.render(message["content"])
            break
    if template.system and not any(m.get("role") == "system" for m in messages):
        body["messages"] = [{"role": "system", "content": template.system}, *messages]
    return body
