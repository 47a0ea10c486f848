"""All configuration, from one YAML file with `LORAGATE_*` environment overrides, validated
at start-up (a bad value stops the server with the field that is wrong)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class ManagedEngine(BaseModel):
    """An engine the gateway starts and supervises itself (bound to 127.0.0.1)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["vllm", "sim"] = Field(
        "vllm", description="vllm, or the simulated engine (loadtest/sim) for capacity tests"
    )
    model: str = Field("demo", description="model directory, or 'demo' for the built demo base")
    port: int = Field(8101, ge=1, le=65535)
    max_loras: int = Field(
        3, ge=1, description="adapters per batch (--max-loras); 3 fits the demo store's three"
    )
    max_lora_rank: int = Field(8, ge=1)
    dtype: str = "float32"
    max_model_len: int = 1024
    kv_cache_gib: int = Field(1, ge=1)
    omp_threads_bind: str | None = Field(None, description="VLLM_CPU_OMP_THREADS_BIND, e.g. '0'")
    extra_args: list[str] = []
    ready_timeout_s: float = 300.0
    restart_backoff_s: float = Field(1.0, gt=0, description="first restart delay, doubling")


class EngineConfig(BaseModel):
    """One vLLM engine: an external `url`, a `managed` one the gateway starts, or every
    engine behind a `dns` name (a Kubernetes headless Service), re-resolved periodically."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="label in metrics; defaults to engine-<index>")
    url: str | None = None
    managed: ManagedEngine | None = None
    dns: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9.-]+:\d{1,5}$",
        description="host:port whose A/AAAA records are the engines (each named ip:port)",
    )
    max_cpu_loras: int = Field(4, ge=1, description="adapter slots the registry manages here")
    # Admission (server/engines/admission.py): requests sent at once, and waiting beyond that.
    max_inflight: int = Field(64, ge=1, description="requests sent to the engine at once")
    max_queue: int = Field(256, ge=0, description="requests waiting for one of those")

    @model_validator(mode="after")
    def _one_source(self) -> EngineConfig:
        if sum(x is not None for x in (self.url, self.managed, self.dns)) != 1:
            raise ValueError("an engine needs exactly one of `url`, `managed` or `dns`")
        if self.managed is not None and self.managed.max_loras > self.max_cpu_loras:
            raise ValueError(
                f"managed.max_loras ({self.managed.max_loras}) must not exceed max_cpu_loras "
                f"({self.max_cpu_loras}): vLLM refuses to start with --max-loras above "
                "--max-cpu-loras"
            )
        return self

    def base_url(self) -> str:
        if self.url is not None:
            return self.url.rstrip("/")
        assert self.managed is not None, "a dns entry has one URL per resolved address"
        return f"http://127.0.0.1:{self.managed.port}"


class Settings(BaseSettings):
    """loragate's configuration. Environment: `LORAGATE_<FIELD>` (nested: `__`)."""

    model_config = SettingsConfigDict(
        env_prefix="LORAGATE_", env_nested_delimiter="__", extra="forbid"
    )

    store: Path = Path("adapters")
    base_model: str = "demo-base"
    base_config: Path | None = Field(None, description="base config.json; default: demo base")
    base_aliases: list[str] = Field(default_factory=list)
    max_lora_rank: int = Field(8, ge=1)
    engines: list[EngineConfig] = Field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    # Registry (seconds).
    thrash_window_s: float = Field(60.0, gt=0)
    swap_ratio_window_s: float = Field(60.0, gt=0)
    load_wait_timeout_s: float = Field(10.0, ge=0, description="max wait for a free slot")
    reconcile_interval_s: float = Field(15.0, gt=0)
    rollback_window_s: float = Field(3600.0, ge=0)

    # A request waits for an engine slot at most this long, and is refused at once (503 with
    # Retry-After) when the queue ahead of it should take longer (seconds).
    max_queue_wait_s: float = Field(10.0, ge=0)

    # Scale-out and slot fairness (server/engines/: residency, policies, discovery).
    placement_policy: Literal["affinity", "round_robin", "least_loaded"] = "affinity"
    placement_load_factor: float = Field(
        2.0, ge=1.0, description="affinity: no engine above this x the least load (+4 requests)"
    )
    residency_refresh_s: float = Field(1.0, gt=0, description="engine view refresh period")
    discovery_interval_s: float = Field(5.0, gt=0, description="DNS re-resolution period")
    max_pinned_share: float = Field(
        0.5, ge=0, le=1, description="share of an engine's slots that pins may take"
    )
    slot_min_hold_s: float = Field(
        1.0, ge=0, description="a loaded slot is not drained for a waiting request before this"
    )
    # Thrash mitigation (server/engines/slots.py Demand, swaps.py ColdLoadHold).
    eviction_policy: Literal["lru", "demand"] = Field(
        "lru", description="evict the least recently used, or the least recent demand"
    )
    demand_half_life_s: float = Field(30.0, gt=0, description="how fast demand is forgotten")
    thrash_hold_ratio: float = Field(
        0.5, gt=0, description="loads per adapter request above which cold loads are held"
    )
    thrash_hold_s: float = Field(0.0, ge=0, description="how long a cold load is held (0: off)")

    # Engine calls (seconds).
    connect_timeout_s: float = Field(5.0, gt=0)
    request_timeout_s: float = Field(300.0, gt=0)
    load_timeout_s: float = Field(60.0, gt=0)

    log_dir: Path = Field(
        Path.home() / ".cache" / "loragate" / "logs", description="managed engines' logs"
    )
    max_body_bytes: int = Field(1024 * 1024, gt=0, description="request body limit (413)")
    # Caps on what one request may buy (400 past them); a tenant's own caps may be lower.
    max_tokens: int | None = Field(None, ge=1, description="per completion; None: the engine's")
    max_n: int = Field(16, ge=1, description="completions per request: n or best_of x prompts")
    max_logprobs: int = Field(20, ge=0, description="logprobs/top_logprobs/prompt_logprobs")
    max_prompt_chars: int = Field(100_000, gt=0, description="prompt text limit (400)")
    max_prompt_tokens: int = Field(32_768, gt=0, description="prompts sent as token ids")
    tenants_file: Path | None = Field(None, description="API keys → tenants (None: open)")
    hide_foreign_adapters: bool = Field(
        True, description="another tenant's adapter is a 404 like an unknown one (else 403)"
    )
    # Admin API: bearer token (LORAGATE_ADMIN_TOKEN); without one the admin API answers 403.
    admin_token: SecretStr | None = None
    max_upload_bytes: int = Field(
        512 * 1024 * 1024, gt=0, description="an adapter upload's whole multipart body, bytes"
    )
    log_json: bool = True

    # Safe rollout (seconds): canary analysis runs every canary_interval_s; each gateway sends
    # at most shadow_max_inflight mirrors at once (dropped past that) and adds its shadow
    # results to the candidates' eval reports every shadow_report_interval_s.
    canary_interval_s: float = Field(1.0, gt=0)
    shadow_max_inflight: int = Field(8, ge=1)
    shadow_report_interval_s: float = Field(30.0, gt=0)

    # Metrics on their own listener (None: off); on the API port /metrics needs the admin token.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(9464, ge=0, le=65535)

    # Shutdown (SIGTERM): /readyz answers 503 at once, requests are still served for
    # drain_delay_s (load balancers take a moment to stop sending), then the listener closes
    # and requests in flight get drain_grace_s to finish. Kubernetes: keep
    # terminationGracePeriodSeconds > preStop sleep + drain_delay_s + drain_grace_s.
    drain_delay_s: float = Field(5.0, ge=0)
    drain_grace_s: float = Field(30.0, ge=0)
    # Slow clients: request headers must arrive within header_timeout_s of the connection or
    # of the request's first byte; a request body may pause at most body_timeout_s.
    header_timeout_s: float = Field(10.0, gt=0)
    body_timeout_s: float = Field(30.0, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the YAML file (passed as init kwargs by `load`).
        return (env_settings, init_settings)

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> Settings:
        """Settings from a YAML file (relative paths resolve against its directory)."""
        data: dict[str, Any] = {}
        if path is not None:
            loaded = yaml.safe_load(path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{path}: top level must be a mapping")
            data = loaded
            for key in ("store", "base_config", "tenants_file"):
                if isinstance(data.get(key), str):
                    data[key] = str((path.parent / data[key]).resolve())
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)

    def with_demo_engine(self) -> Settings:
        """These settings plus one managed engine on the demo base if none is configured."""
        if self.engines:
            return self
        return self.model_copy(update={"engines": [EngineConfig(managed=ManagedEngine())]})

    def engine_names(self) -> list[str]:
        return [e.name or f"engine-{i}" for i, e in enumerate(self.engines)]
