"""Deterministic "generation": prompts become word counts, answers become seeded words.

One whitespace-separated word is one token. An answer is `[<served model>]` followed by
words drawn from a fixed vocabulary by a PRNG seeded with a hash of (seed, model, choice
index, prompt), so the same input always yields the same text and the first word names the
adapter that served it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_VOCABULARY: tuple[str, ...] = (
    "amber",
    "basil",
    "cedar",
    "delta",
    "ember",
    "fjord",
    "grove",
    "harbor",
    "iris",
    "juniper",
    "kelp",
    "lumen",
    "maple",
    "nectar",
    "onyx",
    "prism",
    "quartz",
    "raven",
    "sage",
    "tundra",
    "umber",
    "violet",
    "willow",
    "xenon",
    "yarrow",
    "zephyr",
    "atlas",
    "breeze",
    "comet",
    "dune",
    "echo",
    "flint",
)


@dataclass(frozen=True)
class Prompt:
    """One prompt as the engine sees it: the text hashed for the answer, and its length."""

    text: str
    num_tokens: int


def completion_prompts(prompt: str | Sequence[Any]) -> list[Prompt]:
    """Normalise vLLM's accepted `prompt` forms: str, [str], [int] and [[int]]."""
    if isinstance(prompt, str):
        return [_text_prompt(prompt)]
    items = list(prompt)
    if items and all(isinstance(item, int) for item in items):
        return [_token_prompt(items)]
    return [_text_prompt(item) if isinstance(item, str) else _token_prompt(item) for item in items]


def chat_prompt(messages: Sequence[dict[str, Any]]) -> Prompt:
    """Flatten a conversation; roles go into the hashed text but count as no tokens."""
    contents = [_message_text(message.get("content")) for message in messages]
    text = "\n".join(
        f"{message.get('role', '')}: {content}"
        for message, content in zip(messages, contents, strict=True)
    )
    return Prompt(text=text, num_tokens=sum(len(content.split()) for content in contents))


def answer_pieces(*, model: str, prompt: Prompt, choice: int, seed: int, length: int) -> list[str]:
    """The first `length` tokens of the answer, each with its leading space, so that
    "".join(pieces) is the text and each piece is one streamed delta."""
    if length <= 0:
        return []
    digest = hashlib.blake2b(
        f"{seed}\0{model}\0{choice}\0{prompt.text}".encode(), digest_size=8
    ).digest()
    rng = random.Random(int.from_bytes(digest, "big"))
    words = [rng.choice(_VOCABULARY) for _ in range(length - 1)]
    return [f"[{model}]", *(f" {word}" for word in words)]


def _text_prompt(text: str) -> Prompt:
    return Prompt(text=text, num_tokens=len(text.split()))


def _token_prompt(token_ids: Sequence[int]) -> Prompt:
    return Prompt(text=" ".join(map(str, token_ids)), num_tokens=len(token_ids))


def _message_text(content: Any) -> str:
    """OpenAI message content: a string, null, or a list of parts of which text counts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""
