"""The parts of the store's files that describe a safe rollout.

- `OutputChecks` (a version's `manifest.json` `checks`): what every answer of the version must
  satisfy. The gateway applies them while the version runs in a canary or a shadow
  (`server/releases/checks.py`).
- `ShadowStats` (an eval report's `shadow`): how an eval report made from shadow traffic was
  measured. Every field adds up, so gateways sharing a store merge their reports into one
  (`server/releases/shadow_report.py`).
"""

from __future__ import annotations

import math
import re
from typing import Any

import jsonschema_rs
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OutputChecks(_Strict):
    """Checks on a version's answers. An answer that does not parse as JSON or does not match
    `json_schema` is a schema error; one that matches a `deny_patterns` regex (re.search) or
    contains a `deny_words` word (whole word, any case) is a policy violation."""

    json_schema: dict[str, Any] | None = Field(None, description="JSON Schema of every answer")
    deny_patterns: tuple[str, ...] = ()
    deny_words: tuple[str, ...] = ()

    @field_validator("json_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and not jsonschema_rs.meta.is_valid(value):
            raise ValueError("json_schema is not a valid JSON Schema")
        if value is not None:
            try:  # offline: a `$ref` to a URL is refused here, never fetched by a gateway
                jsonschema_rs.validator_for(value, offline=True)
            except Exception as exc:
                raise ValueError(f"json_schema does not compile: {exc}") from None
        return value

    @field_validator("deny_patterns")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:  # not a ValueError: pydantic would not report it
                raise ValueError(f"deny_patterns: {pattern!r} is not a regex: {exc}") from None
        return value

    @field_validator("deny_words")
    @classmethod
    def _words(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not word.strip() for word in value):
            raise ValueError("deny_words: empty word")
        return value


# Seconds. Shadow answers on a CPU engine take milliseconds (the simulated engine) to minutes.
LATENCY_BOUNDS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


class LatencyCounts(_Strict):
    """A latency histogram that adds up: `counts[i]` answers took at most `bounds_s[i]`
    seconds (and more than the bound before); the last count is for slower answers."""

    bounds_s: tuple[float, ...] = LATENCY_BOUNDS_S
    counts: tuple[int, ...] = (0,) * (len(LATENCY_BOUNDS_S) + 1)

    @model_validator(mode="after")
    def _shape(self) -> LatencyCounts:
        if len(self.counts) != len(self.bounds_s) + 1 or min(self.counts, default=0) < 0:
            raise ValueError("counts: one count (>= 0) per bound, and one for slower answers")
        return self

    def observe(self, seconds: float) -> LatencyCounts:
        index = next((i for i, b in enumerate(self.bounds_s) if seconds <= b), len(self.bounds_s))
        counts = list(self.counts)
        counts[index] += 1
        return self.model_copy(update={"counts": tuple(counts)})

    def plus(self, other: LatencyCounts) -> LatencyCounts:
        """Raises ValueError when the bounds differ."""
        if other.bounds_s != self.bounds_s:
            raise ValueError("latency histograms with different bounds do not add up")
        counts = tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        return self.model_copy(update={"counts": counts})

    def quantile(self, q: float) -> float | None:
        """The bound (seconds) the `q` quantile lies under; inf past the last; None if empty."""
        total = sum(self.counts)
        if total == 0:
            return None
        rank, seen = q * total, 0
        for bound, count in zip((*self.bounds_s, math.inf), self.counts, strict=True):
            seen += count
            if seen >= rank:
                return bound
        return math.inf


class ShadowStats(_Strict):
    """How a shadow eval report was measured. The report's `n` counts the mirrored requests
    that finished, `score` their mean token F1 against the answer the client got (a failed
    mirror scores 0), `policy_violations` / `schema_errors` the candidate's output checks."""

    reference: str = Field(description="the version whose answers the clients got, name@version")
    exact_match: float = Field(ge=0.0, le=1.0, description="share of identical answers")
    errors: int = Field(0, ge=0, description="mirrored requests the candidate failed")
    dropped: int = Field(0, ge=0, description="requests not mirrored: limit, busy engine, cold")
    reference_policy_violations: int = Field(0, ge=0)
    reference_schema_errors: int = Field(0, ge=0)
    latency: LatencyCounts = LatencyCounts()
    reference_latency: LatencyCounts = LatencyCounts()
