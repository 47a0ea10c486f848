"""Tenants: who is calling (API key → tenant) and what each tenant may use.

The tenants file (YAML, path in `Settings.tenants_file`, re-read when it changes):

```yaml
tenants:
  acme-support:
    keys_sha256: [<sha256 hex of an API key>]   # `loragate tenants hash-key KEY`; never plain keys
    adapters: [support-bot, sentiment]           # what it may call ("*": every adapter)
    default: support-bot                         # used when a request names no model
    tasks: {sentiment: sentiment, qa: support-bot}   # task aliases: model or X-Task header
    allow_base: false                            # may it call the bare base model
    max_tokens: 512                              # per completion: max_(completion_)tokens
    max_n: 4                                     # completions per request: n, best_of x prompts
    max_logprobs: 5                              # logprobs, top_logprobs, prompt_logprobs
    max_prompt_chars: 20000
    max_prompt_tokens: 8000                      # prompts sent as token ids
    rate_limit: {requests_per_s: 5, burst: 10, tokens_per_min: 20000}
    max_concurrent: 4
```

Without a tenants file the gateway runs open: one tenant, `default`, that may use everything.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from server.errors import Unauthorized

log = logging.getLogger(__name__)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def hash_key(key: str) -> str:
    """How API keys are stored: sha256 hex of the key as sent in `Authorization: Bearer`."""
    return hashlib.sha256(key.encode()).hexdigest()


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_s: float | None = Field(None, gt=0)
    burst: int | None = Field(None, ge=1, description="default: max(1, requests_per_s)")
    tokens_per_min: int | None = Field(None, ge=1)


class Tenant(BaseModel):
    """One tenant's identity and entitlements."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "default"
    keys_sha256: tuple[str, ...] = ()
    adapters: tuple[str, ...] = ("*",)
    default: str | None = None
    tasks: dict[str, str] = Field(default_factory=dict)
    allow_base: bool = True
    # Unset caps fall back to the gateway's (Settings), which always bound n and logprobs.
    max_tokens: int | None = Field(None, ge=1)
    max_n: int | None = Field(None, ge=1)
    max_logprobs: int | None = Field(None, ge=0)
    max_prompt_chars: int | None = Field(None, ge=1)
    max_prompt_tokens: int | None = Field(None, ge=1)
    rate_limit: RateLimit | None = None
    max_concurrent: int | None = Field(None, ge=1)

    @field_validator("keys_sha256")
    @classmethod
    def _hashes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for digest in value:
            if not _SHA256.fullmatch(digest):
                raise ValueError("keys_sha256 entries are 64 lowercase hex digits (sha256)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Tenant:
        for target in (self.default, *self.tasks.values()):
            if target is not None and not self.may_use(target.partition("@")[0]):
                raise ValueError(f"{target!r} is a default/task target but not in adapters")
        return self

    def may_use(self, adapter: str) -> bool:
        return "*" in self.adapters or adapter in self.adapters


class TenantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenants: dict[str, Tenant]


OPEN_TENANT = Tenant()


class Tenants:
    """The tenants directory; `authenticate` maps a bearer key to its tenant."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._by_hash: dict[str, Tenant] = {}
        self._tenants: dict[str, Tenant] = {}
        self._mtime: int | None = None
        if path is not None:
            self.reload()

    @property
    def open(self) -> bool:
        return self.path is None

    def names(self) -> list[str]:
        return sorted(self._tenants) if not self.open else [OPEN_TENANT.name]

    def reload(self) -> None:
        """Read the file; raise ValueError (with the field) if it is invalid."""
        assert self.path is not None
        mtime = os.stat(self.path).st_mtime_ns
        try:
            raw = yaml.safe_load(self.path.read_text()) or {}
            parsed = TenantsFile.model_validate(raw)
        except (yaml.YAMLError, ValidationError) as exc:
            raise ValueError(f"{self.path}: {exc}") from None
        tenants = {n: t.model_copy(update={"name": n}) for n, t in parsed.tenants.items()}
        by_hash: dict[str, Tenant] = {}
        for tenant in tenants.values():
            for digest in tenant.keys_sha256:
                if digest in by_hash:
                    raise ValueError(f"{self.path}: a key is shared by two tenants")
                by_hash[digest] = tenant
        self._tenants, self._by_hash, self._mtime = tenants, by_hash, mtime

    def maybe_reload(self) -> None:
        """Re-read the file if it changed; keep the previous tenants if the new file is bad."""
        if self.path is None:
            return
        try:
            if os.stat(self.path).st_mtime_ns == self._mtime:
                return
            self.reload()
            log.info("tenants reloaded", extra={"tenants": len(self._tenants)})
        except (OSError, ValueError) as exc:
            message = "tenants file not reloaded, keeping the previous one"
            log.error(message, extra={"error": str(exc)})

    def authenticate(self, authorization: str | None) -> Tenant:
        """The tenant of `Authorization: Bearer <key>`; raise `Unauthorized` otherwise."""
        if self.open:
            return OPEN_TENANT
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("missing API key: send Authorization: Bearer <key>")
        tenant = self._by_hash.get(hash_key(key.strip()))
        if tenant is None:
            raise Unauthorized("invalid API key")
        return tenant
