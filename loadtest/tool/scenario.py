"""What a load test does, as one validated value: a `Scenario` read from YAML or built from flags.

```yaml
name: swap-storm
workload:   {adapters: [...], popularity: {kind: zipf, alpha: 1.1}, base_share: 0.1,
             prompt_tokens: 32, output_tokens: {kind: uniform, min: 8, max: 32}, stream: 0.5}
arrivals:   {kind: poisson, rate: 30}           # constant, concurrency (clients), trace; ramp_to
bounds:     {duration_s: 30, requests: 5000, warmup_s: 2}
rounds: 2                                       # per target; targets alternate round by round
targets:    [{name: gateway, urls: [http://127.0.0.1:8000]}]
sim:        {...}                               # or: a simulated deployment on loopback
actions:    [{at_s: 5, adapter: bench, steps: [{kind: rollback}], expect: v1}]
```
Every model is frozen and refuses unknown keys, so a typo in a scenario file is an error naming
the key, not a silently ignored setting.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_STRICT = ConfigDict(extra="forbid", frozen=True)


class Lengths(BaseModel):
    """A token-count distribution: `fixed` (value), `uniform` (min..max) or `lognormal`
    (median, sigma; clipped to min..max). A bare integer in YAML means `fixed`."""

    model_config = _STRICT

    kind: Literal["fixed", "uniform", "lognormal"] = "fixed"
    value: int = Field(16, ge=1)
    min: int = Field(1, ge=1)
    max: int = Field(4096, ge=1)
    median: float = Field(32.0, gt=0)
    sigma: float = Field(0.5, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _bare_int(cls, data: Any) -> Any:
        return {"kind": "fixed", "value": data} if isinstance(data, int) else data

    @model_validator(mode="after")
    def _ordered(self) -> Lengths:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class Popularity(BaseModel):
    """Which adapter each request names, by rank (rank 1 = the first adapter listed).

    - `uniform`, `zipf` (P(rank k) ∝ 1/k^alpha) over the first `hot_set` adapters (all if unset);
    - `cycle`: the hot set in order, `burst` requests per adapter in a row: with a hot set
      larger than the slots every adapter is evicted before it comes round again, so the
      first request of each burst is *cold* (the swap-overhead measurement);
    - `trace`: models (and, with `arrivals.kind: trace`, timestamps) from a file: CSV
      `timestamp_s,model` or JSON lines `{"timestamp_s": …, "model": …}`.
    """

    model_config = _STRICT

    kind: Literal["uniform", "zipf", "cycle", "trace"] = "zipf"
    alpha: float = Field(1.1, gt=0)
    hot_set: int | None = Field(None, ge=1)
    burst: int = Field(1, ge=1)
    trace: Path | None = None

    @model_validator(mode="after")
    def _trace_has_file(self) -> Popularity:
        if (self.kind == "trace") != (self.trace is not None):
            raise ValueError("`trace` (a file) goes with kind: trace, and only with it")
        return self


class Arrivals(BaseModel):
    """When requests are sent: open loop at `rate` req/s (`poisson` or `constant` gaps,
    rising linearly to `ramp_to` by the end of the round), a closed loop of `clients` that
    each send the next request when their last one ends (`concurrency`), or the trace's
    timestamps (`trace`, with popularity kind trace)."""

    model_config = _STRICT

    kind: Literal["poisson", "constant", "concurrency", "trace"] = "poisson"
    rate: float | None = Field(None, gt=0)
    ramp_to: float | None = Field(None, gt=0)
    clients: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _parameters(self) -> Arrivals:
        if self.kind in ("poisson", "constant") and self.rate is None:
            raise ValueError(f"arrivals kind {self.kind} needs `rate` (requests per second)")
        if self.kind == "concurrency" and self.clients is None:
            raise ValueError("arrivals kind concurrency needs `clients`")
        if self.ramp_to is not None and self.kind not in ("poisson", "constant"):
            raise ValueError("`ramp_to` goes with poisson or constant arrivals")
        return self

    @property
    def open_loop(self) -> bool:
        return self.kind != "concurrency"


class Workload(BaseModel):
    """What each request asks for. `adapters` in popularity order; empty means every adapter
    of the simulated deployment (`sim`)."""

    model_config = _STRICT

    adapters: list[str] = []
    popularity: Popularity = Popularity()
    base_share: float = Field(0.0, ge=0, le=1, description="share of requests to the base model")
    prompt_tokens: Lengths = Lengths(value=32)
    output_tokens: Lengths = Lengths(value=16)
    stream: float = Field(0.0, ge=0, le=1, description="share streamed (true = all)")
    endpoint: Literal["completions", "chat"] = "completions"
    api_keys: list[str] = Field(default_factory=list, description="tenant keys, spread evenly")
    timeout_s: float = Field(120.0, gt=0)
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _stream_bool(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("stream"), bool):
            return {**data, "stream": 1.0 if data["stream"] else 0.0}
        return data


class Bounds(BaseModel):
    """Each round stops sending at `duration_s` or after `requests`, whichever comes first,
    then waits up to `drain_s` for open-loop answers. Requests scheduled (closed loop: sent)
    before `warmup_s` are kept in the results but left out of the summaries."""

    model_config = _STRICT

    duration_s: float | None = Field(30.0, gt=0)
    requests: int | None = Field(None, ge=1)
    warmup_s: float = Field(0.0, ge=0)
    drain_s: float = Field(30.0, ge=0)

    @model_validator(mode="after")
    def _bounded(self) -> Bounds:
        if self.duration_s is None and self.requests is None:
            raise ValueError("a run needs `duration_s` or `requests` (or both)")
        if self.duration_s is not None and self.warmup_s >= self.duration_s:
            raise ValueError("warmup_s must be shorter than duration_s")
        return self


class TargetSpec(BaseModel):
    """An OpenAI-compatible endpoint. Several `urls` are one target behind a client-side
    round robin (e.g. two gateway replicas). `model` names an adapter for this target
    (`{adapter}`; `{adapter}@v1` for a bare vLLM engine); `base_model` is the id sent for
    base-model requests. Secrets come from the environment, never from the file."""

    model_config = _STRICT

    name: str
    urls: list[str] = Field(min_length=1)
    model: str = "{adapter}"
    base_model: str | None = None
    api_key_env: str | None = None
    admin_token_env: str = "LORAGATE_ADMIN_TOKEN"  # noqa: S105 (a variable name)
    store: Path | None = Field(None, description="the target's store, if this machine sees it")

    @model_validator(mode="before")
    @classmethod
    def _one_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and "url" in data:
            data = {**data, "urls": [data["url"]]}
            del data["url"]
        return data


class ReleaseSpec(BaseModel):
    """An adapter of the simulated store with several versions (release scenarios)."""

    model_config = _STRICT

    name: str
    versions: list[str] = Field(min_length=1)
    stable: str
    previous: str | None = None
    incoming: list[str] = Field(default_factory=list, description="packaged, outside the store")


class SimSpec(BaseModel):
    """A deployment started on loopback when no target is given: simulated vLLM engines over a
    store of tiny adapters (`adapter-00` …, stable v1, plus `releases`), `gateways` loragate
    replicas in front of them, and with `compare_direct` the engines themselves as a second
    target (every adapter registered up front, as a bare vLLM deployment does)."""

    model_config = _STRICT

    engines: int = Field(1, ge=1)
    gateways: int = Field(1, ge=0)
    compare_direct: bool = False
    adapters: int = Field(8, ge=0)
    releases: list[ReleaseSpec] = []
    slots: int = Field(4, ge=1, description="max_cpu_loras = the registry's slots per engine")
    max_loras: int | None = Field(None, ge=1, description="adapters per batch (default: slots)")
    max_num_seqs: int = Field(256, ge=1)
    load_ms: float = Field(25.0, ge=0)
    load_jitter_ms: float = Field(0.0, ge=0)
    ttft_ms: float = Field(10.0, ge=0)
    token_ms: float = Field(2.0, ge=0)
    rollback_window_s: float = Field(0.0, ge=0)
    load_wait_timeout_s: float = Field(10.0, ge=0)
    tenants: int = Field(0, ge=0, description="tenant keys to create (0: the gateway runs open)")
    processes: bool = Field(True, description="each server in its own process (own GIL)")
    gateway: dict[str, Any] = Field(
        default_factory=dict, description="more loragate settings for the gateways"
    )

    @model_validator(mode="after")
    def _serves_something(self) -> SimSpec:
        if self.gateways == 0 and not self.compare_direct:
            raise ValueError("a simulated deployment needs gateways > 0 or compare_direct")
        if (self.max_loras or self.slots) > self.slots:
            raise ValueError("max_loras cannot exceed slots (vLLM: max_cpu_loras >= max_loras)")
        return self


class Step(BaseModel):
    """One admin call. `register`: `from_dir` (a packaged version on this machine; `{incoming}`
    is the simulated deployment's directory of packaged versions) is copied into the target's
    `store` and registered in place, or uploaded when the store is not local."""

    model_config = _STRICT

    kind: Literal["rollback", "promote", "register", "canary", "pin", "prewarm"]
    version: str | None = None
    force: bool = False
    weight: float | None = Field(None, ge=0, le=1)
    from_dir: str | None = None

    @model_validator(mode="after")
    def _needs_version(self) -> Step:
        if self.kind != "rollback" and self.version is None:
            raise ValueError(f"step {self.kind} needs `version`")
        if self.kind == "canary" and self.weight is None:
            raise ValueError("step canary needs `weight`")
        if self.kind == "register" and self.from_dir is None:
            raise ValueError("step register needs `from_dir`")
        return self


class Action(BaseModel):
    """Admin steps on `adapter` at `at_s` into the round. With `expect`, the report measures the
    switch: requests failed while it happened, and the time until every new request is served
    by `adapter@expect` (read from `X-Adapter-Version`)."""

    model_config = _STRICT

    at_s: float = Field(ge=0)
    adapter: str
    steps: list[Step] = Field(min_length=1)
    expect: str | None = None


class Scenario(BaseModel):
    model_config = _STRICT

    name: str = "adhoc"
    description: str = ""
    workload: Workload = Workload()
    arrivals: Arrivals = Arrivals(rate=10.0)
    bounds: Bounds = Bounds()
    rounds: int = Field(1, ge=1, description="rounds per target")
    targets: list[TargetSpec] = []
    sim: SimSpec | None = None
    actions: list[Action] = []
    scrape_interval_s: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _coherent(self) -> Scenario:
        trace_pop = self.workload.popularity.kind == "trace"
        if self.arrivals.kind == "trace" and not trace_pop:
            raise ValueError("arrivals kind trace needs workload.popularity kind trace")
        if self.actions and self.rounds != 1:
            raise ValueError("a scenario with actions runs one round (an action changes state)")
        late = [a.at_s for a in self.actions if a.at_s >= (self.bounds.duration_s or math.inf)]
        if late:
            raise ValueError(f"actions at {late} s start after bounds.duration_s")
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"target names must be unique: {names}")
        return self
