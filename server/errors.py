"""The one exception hierarchy of loragate, and the one mapping to OpenAI's error JSON.

```
LoragateError                    base: HTTP status + OpenAI error `type`/`code`
├── InvalidRequest          400  a request body or field is malformed
│   └── InvalidName         400  an adapter name or version is spelled wrongly
├── AdapterInvalid          400  an adapter version broke a validation rule (file + rule)
├── Unauthorized            401  missing or unknown bearer token
├── Forbidden               403  the caller may not use this adapter / endpoint
├── NotFound                404  unknown model, adapter or version
│   └── UnknownRoute        404  no such endpoint
├── Conflict                409  the operation contradicts the store's state
│   ├── VersionExists       409  registering a version that is already in the store
│   └── PromotionRefused    409  eval gate said no (the numbers are in the message)
├── RequestTimeout          408  the client paused too long while sending its request
├── PayloadTooLarge         413  body or upload over its limit
├── RateLimited             429  tenant over its rate or concurrency (Retry-After)
├── Unavailable             503  no capacity now (Retry-After): slots busy, engine down
│   ├── VersionNotReady     503  a version's files do not pass validation (yet): half-copied
│   ├── AdapterGone         503  engine 404: another gateway unloaded the version (retried once)
│   └── EngineUnreachable   503  the engine refused the connection: nothing sent (retried once)
├── UpstreamError           502  the engine answered with an error we cannot pass on
│   └── AdapterLoadFailed   502  the engine refused or failed to load a version
├── UpstreamTimeout         504  the engine did not answer in time
└── StoreError              500  the store on disk is unreadable or inconsistent
```

Services raise these; only `server/app.py` turns them into responses (`to_openai`).
"""

from __future__ import annotations

from typing import Any, ClassVar


class LoragateError(Exception):
    """Base of every error loragate raises on purpose."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "internal_error"
    code: ClassVar[str] = "internal_error"

    def __init__(
        self, message: str, *, param: str | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after_s = retry_after_s

    def to_openai(self) -> dict[str, Any]:
        """The body OpenAI clients expect: `{"error": {message, type, param, code}}`."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(LoragateError):
    """Raised when a request body or field is malformed."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidName(InvalidRequest):
    """Raised when an adapter name or version does not follow the naming rules."""

    code = "invalid_name"


class AdapterInvalid(LoragateError):
    """Raised when an adapter version breaks a validation rule.

    `file` is the path (relative to the version directory) that broke `rule`.
    """

    status = 400
    type = "invalid_request_error"
    code = "adapter_invalid"

    def __init__(self, file: str, rule: str, detail: str) -> None:
        super().__init__(f"{file}: [{rule}] {detail}", param=file)
        self.file = file
        self.rule = rule
        self.detail = detail


class Unauthorized(LoragateError):
    """Raised when the bearer token is missing or unknown."""

    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(LoragateError):
    """Raised when the caller is known but may not use the adapter or endpoint."""

    status = 403
    type = "permission_error"
    code = "forbidden"


class NotFound(LoragateError):
    """Raised when a model, adapter or version does not exist (or must not be revealed)."""

    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class UnknownRoute(NotFound):
    """Raised for a path the gateway does not serve."""

    code = "not_found"


class Conflict(LoragateError):
    """Raised when an operation contradicts the current state of the store."""

    status = 409
    type = "invalid_request_error"
    code = "conflict"


class VersionExists(Conflict):
    """Raised when registering a version that is already in the store (versions are immutable)."""

    code = "version_exists"


class PromotionRefused(Conflict):
    """Raised when a candidate's eval does not beat the current stable on the gate dataset."""

    code = "promotion_refused"


class RequestTimeout(LoragateError):
    """Raised when a client pauses longer than allowed in the middle of its request body."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class PayloadTooLarge(LoragateError):
    """Raised when a request body or an upload is over its configured limit."""

    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class RateLimited(LoragateError):
    """Raised when a tenant is over its request rate, token rate or concurrency."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class Unavailable(LoragateError):
    """Raised when there is no capacity now: every slot busy or pinned, or no engine up."""

    status = 503
    type = "service_unavailable"
    code = "unavailable"


class VersionNotReady(Unavailable):
    """Raised when a request resolves to a version whose files fail validation, e.g. a
    directory still being copied into the store (its checksums do not match yet)."""

    code = "version_not_ready"


class AdapterGone(Unavailable):
    """Raised when an engine answers 404 for the model of a generation call: another gateway
    replica unloaded that version (or the engine restarted) between acquire and send."""

    code = "adapter_gone"


class EngineUnreachable(Unavailable):
    """Raised when an engine cannot be connected to (refused, no route): nothing was sent,
    so the gateway may send the request to another engine."""

    code = "engine_unreachable"


class UpstreamError(LoragateError):
    """Raised when an engine answered with an error that is not the client's fault."""

    status = 502
    type = "upstream_error"
    code = "engine_error"


class AdapterLoadFailed(UpstreamError):
    """Raised when an engine refused or failed to load an adapter version."""

    code = "adapter_load_failed"


class UpstreamTimeout(LoragateError):
    """Raised when an engine did not answer within its timeout."""

    status = 504
    type = "timeout_error"
    code = "engine_timeout"


class StoreError(LoragateError):
    """Raised when the adapter store on disk is unreadable or inconsistent."""

    status = 500
    type = "internal_error"
    code = "store_error"
