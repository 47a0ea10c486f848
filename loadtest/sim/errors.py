"""Errors of the simulated engine, each carrying the status, type and param vLLM answers with.

    SimError                   base: message, HTTP status, OpenAI error "type", "param"
     ├── ValidationFailure     400 BadRequestError   (vLLM VLLMValidationError)
     ├── InvalidUserInput      400 InvalidUserInput  (LoRA load/unload request checks)
     ├── ModelNotFound         404 NotFoundError     (unknown "model"; unknown LoRA on unload)
     ├── AdapterNotFound       404 NotFoundError     (LoRA path / adapter_config.json missing)
     └── EngineFailure         500 InternalServerError
          └── GenerationFailure    (a request failed inside the engine)

They are rendered once, in `loadtest.sim.app`, as vLLM's ErrorResponse
`{"error": {"message", "type", "param", "code"}}` (or as an SSE `data:` event mid-stream).
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any


class SimError(Exception):
    """Base class; `message` is what vLLM would put in error.message before sanitizing."""

    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    err_type: str = "InternalServerError"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ValidationFailure(SimError):
    """A request field is invalid; the message ends with " (parameter=…)" like vLLM's."""

    status = HTTPStatus.BAD_REQUEST
    err_type = "BadRequestError"

    def __init__(self, message: str, *, parameter: str, value: object = None) -> None:
        # vllm/exceptions.py VLLMValidationError.__str__ appends the parameter and value.
        extras = [f"parameter={parameter}"] + ([f"value={value}"] if value is not None else [])
        super().__init__(f"{message} ({', '.join(extras)})", param=parameter)


class InvalidUserInput(SimError):
    """Raised by load/unload checks (empty names, base-model name, already loaded)."""

    status = HTTPStatus.BAD_REQUEST
    err_type = "InvalidUserInput"


class ModelNotFound(SimError):
    """Raised for a `model` that is neither the base model nor a registered LoRA, and for
    unloading a LoRA name that is not registered."""

    status = HTTPStatus.NOT_FOUND
    err_type = "NotFoundError"


class AdapterNotFound(SimError):
    """Raised when a LoRA path does not exist or has no adapter_config.json
    (vllm/exceptions.py LoRAAdapterNotFoundError; param is null)."""

    status = HTTPStatus.NOT_FOUND
    err_type = "NotFoundError"

    def __init__(self, lora_name: str, lora_path: str) -> None:
        super().__init__(f"Loading lora {lora_name} failed: No adapter found for {lora_path}")


class EngineFailure(SimError):
    """Raised when the engine core fails a call, e.g. an adapter that does not validate
    (vLLM reports "Call to add_lora method failed: <reason>") or an injected load fault."""


class GenerationFailure(EngineFailure):
    """Raised when a request fails inside the engine (vLLM GenerationError)."""

    def __init__(self, message: str = "Internal server error") -> None:
        super().__init__(message)


def add_lora_failed(reason: str) -> EngineFailure:
    """The error vLLM's engine-core client raises when its add_lora utility call fails
    (vllm/v1/engine/core.py: f"Call to {name} method failed: {e}")."""
    return EngineFailure(f"Call to add_lora method failed: {reason}")


# The same four rules as vllm/entrypoints/serve/exception_handling/utils.py
# sanitize_message: strip addresses, traceback lines and well-known absolute paths.
_SANITIZERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r" at 0x[0-9a-fA-F]+>"), ">"),
    (re.compile(r'\n?\s*File "[^"]+", line \d+, in \S+(\n\s+.*)?'), ""),
    (re.compile(r"/(?:home|usr|opt|var|tmp|root|lib|mnt|srv)(?:/[\w.\-]+)+"), "<path>"),
    (re.compile(r"(?:/[\w\-]+)+/[\w\-]+\.\w+"), "<path>"),
)


def sanitize_message(message: str) -> str:
    """vLLM rewrites every error message this way, so e.g. a LoRA path under /tmp comes
    back as "<path>"."""
    for pattern, replacement in _SANITIZERS:
        message = pattern.sub(replacement, message)
    return message.strip()


# --- request validation errors (vllm/entrypoints/serve/exception_handling/handlers/validation.py)

_MAX_REPORTED_ERRORS = 10
_MAX_ERROR_INPUT_CHARS = 200
_MAX_ERROR_CHARS = 1000
_BRACKETED = re.compile(r"[\[\]{}()]")
_INTERNAL_LOC_MARKERS = frozenset(
    {
        "function-wrap",
        "function-after",
        "function-before",
        "function-plain",
        "json-or-python",
        "lax-or-strict",
        "chain",
        "default",
        "nullable",
        "tagged-union",
        "union",
        "call",
        "arguments",
        "is-instance",
        "is-subclass",
        "callable",
        "str",
        "int",
        "float",
        "bool",
        "bytes",
        "bytearray",
        "list",
        "tuple",
        "dict",
        "set",
        "frozenset",
        "complex",
        "none",
        "nonetype",
    }
)


def validation_message(errors: list[Any]) -> tuple[str, str | None]:
    """vLLM's message ("N validation errors:\\n  {...}") and param ("body.lora_path")."""
    param = None
    if errors and isinstance(errors[0], dict) and errors[0].get("loc"):
        param = _clean_loc(tuple(errors[0]["loc"]))
    if not errors:
        return "Validation error", param
    label = "error" if len(errors) == 1 else "errors"
    lines = [f"  {_format_error(error)}\n" for error in errors[:_MAX_REPORTED_ERRORS]]
    if len(errors) > _MAX_REPORTED_ERRORS:
        lines.append(f"  ...and {len(errors) - _MAX_REPORTED_ERRORS} more {label}\n")
    message = f"{len(errors)} validation {label}:\n" + "".join(lines)
    return sanitize_message(message.rstrip()), param


def _format_error(error: Any) -> str:
    if isinstance(error, dict):
        error = dict(error)
        if "input" in error:
            error["input"] = _summarize_input(error["input"])
        if isinstance(error.get("loc"), tuple | list):
            error["loc"] = _clean_loc(tuple(error["loc"]))
    text = str(error)
    return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + "...[truncated]"


def _summarize_input(value: object) -> object:
    if isinstance(value, bytes | bytearray):
        return f"<{type(value).__name__} of {len(value)} bytes>"
    if isinstance(value, list | tuple | set | frozenset | dict):
        return f"<{type(value).__name__} of {len(value)} items>"
    text = value if isinstance(value, str) else str(value)
    if len(text) > _MAX_ERROR_INPUT_CHARS:
        return text[:_MAX_ERROR_INPUT_CHARS] + "...[truncated]"
    return value if isinstance(value, str) else text


def _clean_loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not _is_internal(str(p))]
    return ".".join(parts) if parts else ".".join(str(p) for p in loc)


def _is_internal(segment: str) -> bool:
    return bool(_BRACKETED.search(segment)) or segment.lower() in _INTERNAL_LOC_MARKERS
