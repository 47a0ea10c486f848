"""Turning a client's request body into the engine's: the tenant's limits, then the
version's prompt template. Pure functions over plain dicts (the body is forwarded as is)."""

from __future__ import annotations

from typing import Any

from server.errors import InvalidRequest
from server.protocol.openai import Kind
from server.serving.routing import Target
from server.serving.tenants import Tenant


def prompt_chars(kind: Kind, body: dict[str, Any]) -> int:
    """Characters of text the client sent (token-id prompts count one per id)."""
    if kind == "completions":
        prompt = body["prompt"]
        items = prompt if isinstance(prompt, list) else [prompt]
        return sum(len(p) if isinstance(p, str) else 1 for p in items)
    total = 0
    for message in body["messages"]:
        content = message.get("content")
        total += len(content) if isinstance(content, str) else len(str(content or ""))
    return total


def apply_limits(kind: Kind, body: dict[str, Any], tenant: Tenant, max_prompt_chars: int) -> None:
    """The tenant's max_tokens cap (filled in when absent) and prompt length; raises
    `InvalidRequest` (400) naming the parameter."""
    cap = tenant.max_tokens
    if cap is not None:
        asked = body.get("max_tokens")
        if asked is None:
            body["max_tokens"] = cap
        elif asked > cap:
            message = f"max_tokens {asked} is over this key's limit of {cap}"
            raise InvalidRequest(message, param="max_tokens")
    limit = min(max_prompt_chars, tenant.max_prompt_chars or max_prompt_chars)
    if (n := prompt_chars(kind, body)) > limit:
        param = "prompt" if kind == "completions" else "messages"
        message = f"the prompt is {n} characters, over the limit of {limit}"
        raise InvalidRequest(message, param=param)


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
