"""Admin API request models. Unknown fields are refused: a misspelt `forced` must not
silently promote without force, nor `weigth` end a canary."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from server.store.manifest import Channels, EvalReport


class _AdminRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterInPlace(_AdminRequest):
    """`POST /admin/adapters/{name}/versions` as JSON: a directory already copied to
    `<store>/<name>/<version>`, validated where it is."""

    version: str = Field(min_length=1, max_length=64)


class PromoteRequest(_AdminRequest):
    version: str = Field(min_length=1, max_length=64)
    force: bool = False
    dataset: str | None = Field(None, min_length=1, max_length=128)


class CanaryRequest(_AdminRequest):
    """A canary and its analysis bounds (see `server.store.manifest.Canary` for what they mean
    and their defaults). A bound sent as null is turned off; one not sent keeps its default."""

    version: str | None = Field(None, min_length=1, max_length=64)
    weight: float | None = Field(
        None, ge=0.0, le=1.0, description="share of the adapter's requests; 0 ends; steps: 1st"
    )
    max_error_rate_delta: float | None = Field(None, ge=0.0, le=1.0)
    max_p99_ratio: float | None = Field(None, ge=1.0)
    max_violation_rate: float | None = Field(None, ge=0.0, le=1.0)
    min_requests: int | None = Field(None, ge=1)
    window_s: float | None = Field(None, gt=0.0)
    steps: list[float] | None = Field(None, max_length=20, description="percent, ending at 100")
    dwell_s: float | None = Field(None, gt=0.0)

    def bounds(self) -> dict[str, Any]:
        """The analysis fields the caller sent (null included)."""
        return {k: getattr(self, k) for k in self.model_fields_set - {"version", "weight"}}


class ShadowRequest(_AdminRequest):
    version: str | None = Field(None, min_length=1, max_length=64)
    share: float = Field(ge=0.0, le=1.0, description="share of the stable's requests; 0 ends")


# --- the adapter listing (GET /admin/adapters) ------------------------------------------------


class SlotInfo(BaseModel):
    """One adapter slot on an engine, as the registry holds it."""

    key: str  # `name@version`
    state: str  # loading, ready, unloading
    inflight: int
    pinned: bool
    last_used: float  # monotonic seconds of the gateway process


class EngineInfo(BaseModel):
    up: bool
    capacity: int
    slots: list[SlotInfo]


class VersionInfo(BaseModel):
    version: str
    created_at: datetime
    created_by: str | None
    channel: str | None  # stable, previous, canary, or None
    validation: str  # valid, unknown, or "invalid: <file>: [rule] detail"
    resident_on: list[str]
    warm_pinned: bool
    evals: dict[str, EvalReport]


class AdapterInfo(BaseModel):
    name: str
    versions: list[VersionInfo]
    channels: Channels


class BrokenInfo(BaseModel):
    path: str
    error: str


class AdapterListing(BaseModel):
    adapters: list[AdapterInfo]
    engines: dict[str, EngineInfo]
    broken: list[BrokenInfo]
