"""The files that describe an adapter version and its release channels.

- `manifest.json` (one per version, immutable once registered): what the version was trained
  on, for which base, with which prompt template, and the sha256 of every file.
- `evals/<dataset>.json` (added over time): eval reports made through the serving stack.
- `channels.json` (one per adapter, rewritten atomically): which version is stable, previous,
  canary (with its bounds), shadow, and which versions an operator pinned.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from server.store.refs import check_name, check_version
from server.store.rollout import OutputChecks, ShadowStats

SCHEMA_VERSION = 1
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Strict(BaseModel):
    # A release artifact: a misspelt key ("evals" for "eval") must fail, not vanish.
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseModelRef(_Strict):
    """The base model a version was trained on."""

    id: str = Field(min_length=1, description="id the engines serve it under, e.g. demo-base")
    revision: str | None = Field(None, description="hub revision or source the base came from")
    config_sha256: str | None = Field(
        None, description="sha256 of the base config's architecture keys (see validation.py)"
    )


class PromptTemplate(_Strict):
    """How a request's text is wrapped before it reaches the engine.

    `completion` must contain `{input}` (replaced literally, never `str.format`ted);
    `system` is prepended as the chat system message when the request has none.
    """

    completion: str = "{input}"
    system: str | None = None

    @field_validator("completion")
    @classmethod
    def _has_input(cls, value: str) -> str:
        if "{input}" not in value:
            raise ValueError("completion template must contain {input}")
        return value

    def render(self, text: str) -> str:
        return self.completion.replace("{input}", text)


class DataLineage(_Strict):
    """Where the training data came from."""

    dataset_id: str = Field(min_length=1)
    origin: str = Field(min_length=1, description="how it was obtained: script, package, URL")
    cleaning: str = ""
    n_examples: int | None = Field(None, ge=0)


class EvalReport(_Strict):
    """An evaluation of one model (adapter version or base) on one dataset."""

    dataset: str = Field(min_length=1)
    metric: str = Field(min_length=1, description="exact_match, rouge_l, token_f1, …")
    score: float
    n: int = Field(ge=1)
    baseline_score: float | None = Field(None, description="the base model on the same set")
    policy_violations: int = Field(0, ge=0)
    schema_errors: int = Field(0, ge=0)
    model: str | None = Field(None, description="what was evaluated, e.g. sentiment@v2")
    created_at: datetime = Field(default_factory=utcnow)
    shadow: ShadowStats | None = Field(None, description="made from shadow traffic: how")


class Manifest(_Strict):
    """`manifest.json` of one adapter version."""

    schema_version: int = SCHEMA_VERSION
    name: str
    version: str
    base_model: BaseModelRef
    prompt_template: PromptTemplate = PromptTemplate()
    lineage: DataLineage
    eval: EvalReport | None = Field(None, description="eval given at packaging time")
    checks: OutputChecks | None = Field(None, description="what every answer must satisfy")
    files: dict[str, str] = Field(description="relative file name -> sha256 (hex)")
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str = Field(min_length=1)
    notes: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        return check_version(value)

    @field_validator("files")
    @classmethod
    def _files(cls, value: dict[str, str]) -> dict[str, str]:
        for path, digest in value.items():
            if not _SHA256_RE.fullmatch(digest):
                raise ValueError(f"{path}: sha256 must be 64 lowercase hex digits")
        return value


class Canary(_Strict):
    """`weight` of the adapter's requests go to `version`. The gateway compares it with the
    stable version over the last `window_s` (server/releases/canary.py) and sets its weight to
    0 when, with `min_requests` or more, it breaks a bound (None: not checked). With `steps`
    (percent of traffic, ending at 100) the weight advances one step after `dwell_s` held,
    and the version is promoted once 100 held."""

    version: str
    weight: float = Field(ge=0.0, le=1.0)
    max_error_rate_delta: float | None = Field(0.02, ge=0.0, le=1.0, description="5xx, vs stable")
    max_p99_ratio: float | None = Field(1.5, ge=1.0, description="p99 latency / the stable's")
    max_violation_rate: float | None = Field(0.01, ge=0.0, le=1.0, description="output checks")
    min_requests: int = Field(50, ge=1, description="canary requests before any verdict")
    window_s: float = Field(300.0, gt=0.0, le=86400.0)
    steps: tuple[float, ...] = ()
    dwell_s: float = Field(300.0, gt=0.0, le=7 * 86400.0)
    started_at: datetime | None = Field(None, description="outcomes before are not compared")
    stepped_at: datetime | None = Field(None, description="when the weight was last set")

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        return check_version(value)

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if value and (
            any(b <= a for a, b in itertools.pairwise(value)) or value[0] <= 0 or value[-1] != 100
        ):
            raise ValueError("steps: increasing percentages above 0, ending at 100")
        return value


class Shadow(_Strict):
    """Mirror `share` of the requests the stable version serves to `version`; the clients are
    never answered from it (server/serving/shadow.py)."""

    version: str
    share: float = Field(gt=0.0, le=1.0)
    started_at: datetime | None = None

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        return check_version(value)


class Channels(_Strict):
    """`channels.json`: the release pointers of one adapter."""

    stable: str | None = None
    previous: str | None = None
    canary: Canary | None = None
    shadow: Shadow | None = None
    pinned: tuple[str, ...] = ()
    # Bumped on every write; lets concurrent gateways and tests see lost updates.
    revision: int = 0
    updated_at: datetime | None = None

    @field_validator("stable", "previous")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        return None if value is None else check_version(value)

    @field_validator("pinned")
    @classmethod
    def _pinned(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted({check_version(v) for v in value}))

    @model_validator(mode="after")
    def _distinct(self) -> Channels:
        if self.stable is not None and self.stable == self.previous:
            raise ValueError("stable and previous must differ")
        return self

    def referenced(self) -> set[str]:
        """Versions a channel points at (these may not be retired)."""
        refs = {v for v in (self.stable, self.previous) if v}
        if self.canary is not None and self.canary.weight > 0:
            refs.add(self.canary.version)
        if self.shadow is not None:
            refs.add(self.shadow.version)
        return refs


class AuditEntry(BaseModel):
    """One line of `audit.jsonl`."""

    model_config = ConfigDict(extra="allow")

    at: datetime = Field(default_factory=utcnow)
    actor: str
    action: str
    adapter: str | None = None
    from_version: str | None = None
    to_version: str | None = None
    forced: bool = False
    detail: str = ""
