"""Configuration of the simulated engine: capacity, latencies and injectable faults.

`SimConfig` is fixed for the life of a server; `Faults` can also be replaced at runtime
through `POST /sim/faults` (only the fields present in the JSON body change).
"""

from __future__ import annotations

import re

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)


class Faults(BaseModel):
    """Faults a test can inject. All off by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Loads of adapters whose name matches this regex (re.search; anchor with ^…$ for an
    # exact name) fail with vLLM's 500 "Call to add_lora method failed: …".
    fail_load: str | None = None
    # Loads answer 200 with vLLM's success text but register nothing (some vLLM versions did
    # this for a bad path); a gateway must notice through GET /v1/models.
    load_lies: bool = False
    # Probability in [0, 1] that an accepted completion request fails with a 500 before any
    # output (vLLM's GenerationError "Internal server error").
    fail_requests: float = Field(default=0.0, ge=0.0, le=1.0)
    # Limits `fail_requests` to requests whose served model name (the base id, or a LoRA's
    # name such as `alpha@v2`) matches this regex (re.search; `^alpha@v2$` for one name).
    fail_models: str | None = None
    # Extra latency (ms) before a completion request reaches the scheduler.
    request_delay_ms: float = Field(default=0.0, ge=0.0)
    # Streams fail with an SSE error event after this many tokens (None = never).
    stream_error_after_tokens: int | None = Field(default=None, ge=0)
    # GET /health answers 503, as vLLM does once its engine core has died.
    unhealthy: bool = False

    @field_validator("fail_load", "fail_models")
    @classmethod
    def _compiles(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:  # not a ValueError, so pydantic would not report it
                raise ValueError(f"{info.field_name} is not a regular expression: {exc}") from exc
        return value

    def load_fails(self, lora_name: str) -> bool:
        return self.fail_load is not None and re.search(self.fail_load, lora_name) is not None

    def may_fail(self, model: str) -> bool:
        """Whether `fail_requests` applies to a request for the served model `model`."""
        return self.fail_models is None or re.search(self.fail_models, model) is not None

    def merged(self, changes: dict[str, object]) -> Faults:
        """A copy with `changes` applied and validated; raises pydantic.ValidationError."""
        return Faults.model_validate({**self.model_dump(), **changes})


class SimConfig(BaseModel):
    """Everything a simulated engine needs; mirrors the vLLM flags it imitates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)  # 0 = pick a free port
    model: str = "sim-base"  # served base model id (vLLM: --model / --served-model-name)
    # vLLM --max-loras: distinct adapters that may run in one batch.
    max_loras: int = Field(default=1, ge=1)
    # vLLM --max-cpu-loras: adapters held loaded (LRU); None means max_loras, like vLLM.
    max_cpu_loras: int | None = Field(default=None, ge=1)
    max_lora_rank: int = Field(default=16, ge=1)  # vLLM --max-lora-rank
    max_model_len: int = Field(default=2048, ge=1)  # tokens (prompt + output)
    max_num_seqs: int = Field(default=256, ge=1)  # requests running at once (vLLM default)
    load_ms: float = Field(default=30.0, ge=0.0)  # adapter load latency, ms
    load_jitter_ms: float = Field(default=0.0, ge=0.0)  # uniform ± around load_ms
    ttft_ms: float = Field(default=10.0, ge=0.0)  # admission to first token, ms
    token_ms: float = Field(default=2.0, ge=0.0)  # between consecutive tokens, ms
    # Length (tokens) of the answer when max_tokens does not cut it: the simulated EOS.
    answer_tokens: int = Field(default=32, ge=1)
    seed: int = 0  # seeds the answer words, the load jitter and fail_requests draws
    # vLLM's engine core runs adapter loads in its single busy loop, so a load pauses
    # decoding for every running request; False lets decoding overlap loads.
    load_pauses_decoding: bool = True
    # Seconds uvicorn waits for in-flight responses on shutdown before cancelling them.
    graceful_shutdown_s: float = Field(default=0.5, ge=0.0)
    faults: Faults = Faults()

    @model_validator(mode="after")
    def _cpu_cache_holds_a_batch(self) -> SimConfig:
        # Same rule and message as vllm/config/lora.py (LoRAConfig._validate_lora_config).
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(
                f"max_cpu_loras ({self.max_cpu_loras}) must be >= max_loras ({self.max_loras})."
            )
        return self

    @property
    def cpu_lora_capacity(self) -> int:
        return self.max_cpu_loras if self.max_cpu_loras is not None else self.max_loras
