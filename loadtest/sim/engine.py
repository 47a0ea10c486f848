"""The simulated engine: adapter registration, CPU cache, batch admission, token pacing.

No HTTP here; `loadtest.sim.app` maps routes onto these methods. Behaviour follows
vllm/entrypoints/openai/models/serving.py (load/unload checks, messages, per-name locks)
and vllm/lora/worker_manager.py (LRU CPU cache, hidden reloads); see `adapters.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, defaultdict
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from loadtest.sim.adapters import Adapter, CpuLoraCache, check_adapter_dir
from loadtest.sim.config import Faults, SimConfig
from loadtest.sim.errors import (
    GenerationFailure,
    InvalidUserInput,
    ModelNotFound,
    SimError,
    ValidationFailure,
    add_lora_failed,
)
from loadtest.sim.scheduler import BatchScheduler
from loadtest.sim.text import Prompt, answer_pieces


@dataclass(frozen=True)
class Choice:
    """One output sequence: its pieces (one token each) and why it ends."""

    index: int
    prompt_index: int
    pieces: tuple[str, ...]
    finish_reason: str  # "stop" (the simulated EOS) or "length" (max_tokens / context)


@dataclass(frozen=True)
class Job:
    """A validated request: who serves it and what it will produce."""

    model: str  # served name: the base model id or the LoRA name
    adapter: Adapter | None
    prompts: tuple[Prompt, ...]
    choices: tuple[Choice, ...]

    @property
    def prompt_tokens(self) -> int:
        return sum(prompt.num_tokens for prompt in self.prompts)


@dataclass(frozen=True)
class TokenEvent:
    choice: int
    text: str
    finish_reason: str | None  # set on the choice's last event


@dataclass
class SimStats:
    """Monotonic counters, read by /sim/stats and the Prometheus collector."""

    loads: int = 0
    load_failures: int = 0
    unloads: int = 0
    # Unloads of an adapter with a request running or waiting at that moment (what
    # vllm:lora_requests_info reported): a gateway's eviction should never do that.
    unloads_while_busy: int = 0
    max_registered: int = 0  # high-water mark of registered adapters (capacity checks)
    cpu_cache_reloads: int = 0
    cpu_cache_evictions: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    requests_cancelled: int = 0
    requests_failed: int = 0
    # vllm:lora_requests_info label values (waiting, running) -> unix time last set; vLLM
    # calls set_to_current_time() on each label set, so old sets stay exported.
    lora_info: dict[tuple[str, str], float] = field(default_factory=dict)


class SimEngine:
    """One simulated vLLM engine. Create it inside or outside a loop; use it in one loop."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.faults: Faults = config.faults
        self.stats = SimStats()
        self._rng = random.Random(config.seed)
        self._registered: dict[str, Adapter] = {}  # insertion order = /v1/models order
        self._cpu = CpuLoraCache(config.cpu_lora_capacity)
        self._lora_ids = count(1)  # vLLM's AtomicCounter(0).inc(1)
        self._name_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._core_lock = asyncio.Lock()  # the engine core runs one load at a time
        self._decoding = asyncio.Event()  # cleared while a load pauses decoding
        self._decoding.set()
        self._loop: asyncio.AbstractEventLoop | None = None  # set by the app's lifespan
        self._aborted = False
        self.scheduler = BatchScheduler(
            max_loras=config.max_loras,
            max_num_seqs=config.max_num_seqs,
            on_change=self._record_lora_info,
        )

    # --- lifecycle ---

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def abort_threadsafe(self) -> None:
        """From any thread: fail every waiting and running request (server shutdown), so
        open streams end with an error event instead of holding uvicorn's shutdown."""
        if self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed: nothing in flight
            self._loop.call_soon_threadsafe(self._abort)

    def _abort(self) -> None:
        self._aborted = True
        self.scheduler.abort(GenerationFailure)
        self._decoding.set()

    # --- models ---

    @property
    def adapters(self) -> list[Adapter]:
        return list(self._registered.values())

    def resolve(self, model: str | None) -> tuple[str, Adapter | None]:
        """Served name and adapter for a request's `model` (empty means the base model).
        Raises ModelNotFound with vLLM's message (serve/engine/serving.py _check_model)."""
        if not model or model == self.config.model:
            return self.config.model, None
        adapter = self._registered.get(model)
        if adapter is None:
            raise ModelNotFound(
                f"The model `{model}` does not exist. Valid aliases: {self.config.model}.",
                param="model",
            )
        return model, adapter

    async def load_adapter(self, name: str, path: str, *, load_inplace: bool = False) -> str:
        """Register an adapter and load it into the CPU cache; returns vLLM's success text.
        Raises InvalidUserInput (400), AdapterNotFound (404) or EngineFailure (500)."""
        async with self._name_locks[name]:
            try:
                return await self._load_locked(name, path, load_inplace)
            except SimError:
                self.stats.load_failures += 1
                raise

    async def _load_locked(self, name: str, path: str, load_inplace: bool) -> str:
        self._check_load(name, path, load_inplace)
        previous = self._registered.get(name)
        int_id = previous.int_id if previous else next(self._lora_ids)
        adapter = Adapter(name=name, path=path, int_id=int_id)
        await asyncio.to_thread(check_adapter_dir, name, path, self.config.max_lora_rank)
        faults = self.faults  # one consistent view, even if /sim/faults changes meanwhile
        async with self._engine_core_busy():
            await asyncio.sleep(self._load_seconds())
            if faults.load_fails(name):
                raise add_lora_failed(f"Simulated failure loading LoRA adapter '{name}'")
            if not faults.load_lies:
                self._cache(adapter)
        if not faults.load_lies:
            self._registered[name] = adapter
            self.stats.loads += 1
            self.stats.max_registered = max(self.stats.max_registered, len(self._registered))
        return f"Success: LoRA adapter '{name}' added successfully."

    def _check_load(self, name: str, path: str, load_inplace: bool) -> None:
        # Messages and order from OpenAIServingModels._check_load_lora_adapter_request.
        if not name or not path:
            raise InvalidUserInput("Both 'lora_name' and 'lora_path' must be provided.")
        if name == self.config.model:
            raise InvalidUserInput(f"The lora adapter '{name}' conflicts with a served base model.")
        if not load_inplace and name in self._registered:
            raise InvalidUserInput(
                f"The lora adapter '{name}' has already been loaded. If you want to load "
                "the adapter in place, set 'load_inplace' to True."
            )

    async def unload_adapter(self, name: str) -> str:
        """Unregister an adapter (its weights stay in the CPU LRU, as in vLLM).
        Raises InvalidUserInput (400) or ModelNotFound (404)."""
        async with self._name_locks[name]:
            if not name:
                raise InvalidUserInput("'lora_name' needs to be provided to unload a LoRA adapter.")
            if name not in self._registered:
                raise ModelNotFound(f"The lora adapter '{name}' cannot be found.")
            del self._registered[name]
            self.stats.unloads += 1
            if name in self.scheduler.unfinished_loras:
                self.stats.unloads_while_busy += 1
            return f"Success: LoRA adapter '{name}' removed successfully."

    # --- generation ---

    def plan(
        self,
        *,
        model: str | None,
        prompts: Sequence[Prompt],
        n: int,
        max_tokens: int | None,
        max_tokens_param: str = "max_tokens",
    ) -> Job:
        """Resolve the model and decide every choice's tokens. Raises ModelNotFound (404),
        then ValidationFailure (400) with vLLM's length messages, in vLLM's order."""
        served, adapter = self.resolve(model)
        limit = self.config.max_model_len
        if max_tokens is not None and max_tokens > limit:
            raise ValidationFailure(
                f"{max_tokens_param}={max_tokens} cannot be greater than max_model_len="
                f"{limit}. Please request fewer output tokens.",
                parameter=max_tokens_param,
                value=max_tokens,
            )
        choices = [
            self._plan_choice(served, prompt, p_index, sample=j, n=n, max_tokens=max_tokens)
            for p_index, prompt in enumerate(prompts)
            for j in range(n)
        ]
        return Job(served, adapter, tuple(prompts), tuple(choices))

    def _plan_choice(
        self,
        served: str,
        prompt: Prompt,
        p_index: int,
        *,
        sample: int,
        n: int,
        max_tokens: int | None,
    ) -> Choice:
        limit = self.config.max_model_len
        if prompt.num_tokens > limit:
            # vllm/renderers/params.py TokenizeParams._token_len_check
            raise ValidationFailure(
                f"This model's maximum context length is {limit} tokens. However, your "
                f"prompt contains {prompt.num_tokens} input tokens, which exceeds this limit "
                "even without any output tokens. Please reduce the length of the input prompt.",
                parameter="input_tokens",
                value=prompt.num_tokens,
            )
        # vllm/entrypoints/serve/utils/api_utils.py get_max_tokens, then SamplingParams.
        budget = limit - prompt.num_tokens
        if max_tokens is not None:
            budget = min(budget, max_tokens)
        if budget < 1:
            raise ValidationFailure(
                f"max_tokens must be at least 1, got {budget}.",
                parameter="max_tokens",
                value=budget,
            )
        natural = self.config.answer_tokens
        pieces = answer_pieces(
            model=served,
            prompt=prompt,
            choice=sample,
            seed=self.config.seed,
            length=min(budget, natural),
        )
        finish = "stop" if natural <= budget else "length"
        return Choice(p_index * n + sample, p_index, tuple(pieces), finish)

    async def preflight(self, job: Job) -> None:
        """Count the request and apply request faults, before any response is started.
        Raises GenerationFailure for an injected request failure."""
        self.stats.requests[job.model] += 1
        try:
            if self.faults.request_delay_ms:
                await asyncio.sleep(self.faults.request_delay_ms / 1000)
        except asyncio.CancelledError:
            self.stats.requests_cancelled += 1
            raise
        faults = self.faults
        # The draw happens for every request (matching or not), so a seeded run fails the same
        # requests whatever `fail_models` selects.
        if self._rng.random() < faults.fail_requests and faults.may_fail(job.model):
            self.stats.requests_failed += 1
            raise GenerationFailure()

    async def generate(self, job: Job) -> AsyncGenerator[TokenEvent, None]:
        """Wait for a batch slot, reload the adapter if it left the CPU cache, then yield
        tokens paced by ttft_ms / token_ms. Close it with contextlib.aclosing: leaving
        early (disconnect, cancellation) counts as cancelled. Raises GenerationFailure for
        an injected mid-stream failure."""
        outcome = "cancelled"
        try:
            async with self.scheduler.slot(job.model if job.adapter else None):
                if job.adapter is not None:
                    await self._ensure_resident(job.adapter)
                async for event in self._decode(job.choices):
                    yield event
            outcome = "done"
        except GenerationFailure:
            outcome = "failed"
            raise
        finally:
            if outcome == "cancelled":
                self.stats.requests_cancelled += 1
            elif outcome == "failed":
                self.stats.requests_failed += 1

    async def _decode(self, choices: tuple[Choice, ...]) -> AsyncIterator[TokenEvent]:
        steps = max(len(choice.pieces) for choice in choices)
        fail_after = self.faults.stream_error_after_tokens
        await self._decode_pause(self.config.ttft_ms / 1000)
        for step in range(steps):
            if fail_after is not None and step >= fail_after:
                raise GenerationFailure()
            if step:
                await self._decode_pause(self.config.token_ms / 1000)
            for choice in choices:
                event = _event_at(choice, step)
                if event is not None:
                    yield event

    async def _decode_pause(self, seconds: float) -> None:
        await self._decoding.wait()
        await asyncio.sleep(seconds)
        if self._aborted:
            raise GenerationFailure()

    async def _ensure_resident(self, adapter: Adapter) -> None:
        """The hidden reload: a registered adapter outside the CPU LRU is read again."""
        if adapter.int_id in self._cpu:
            self._cpu.touch(adapter.int_id)
            return
        async with self._engine_core_busy():
            if adapter.int_id in self._cpu:  # another request reloaded it meanwhile
                return
            await asyncio.sleep(self._load_seconds())
            self._cache(adapter)
            self.stats.cpu_cache_reloads += 1

    @asynccontextmanager
    async def _engine_core_busy(self) -> AsyncIterator[None]:
        async with self._core_lock:
            if self.config.load_pauses_decoding:
                self._decoding.clear()
            try:
                yield
            finally:
                self._decoding.set()

    def _cache(self, adapter: Adapter) -> None:
        evicted = self._cpu.add(adapter, busy=self.scheduler.is_running)
        if evicted is not None:
            self.stats.cpu_cache_evictions += 1

    def _load_seconds(self) -> float:
        jitter = self.config.load_jitter_ms
        millis = self.config.load_ms + (self._rng.uniform(-jitter, jitter) if jitter else 0.0)
        return max(millis, 0.0) / 1000

    def _record_lora_info(self) -> None:
        # vLLM fills both dicts from the same LoRARequestStates keys (every LoRA with an
        # unfinished request), so both labels carry the same list. Mirrored as is.
        names = ",".join(self.scheduler.unfinished_loras)
        self.stats.lora_info[(names, names)] = time.time()

    # --- introspection ---

    def snapshot(self) -> dict[str, Any]:
        """Everything /sim/stats reports."""
        stats = self.stats
        return {
            "loads": stats.loads,
            "load_failures": stats.load_failures,
            "unloads": stats.unloads,
            "unloads_while_busy": stats.unloads_while_busy,
            "max_registered": stats.max_registered,
            "cpu_cache_reloads": stats.cpu_cache_reloads,
            "cpu_cache_evictions": stats.cpu_cache_evictions,
            "requests": dict(stats.requests),
            "requests_cancelled": stats.requests_cancelled,
            "requests_failed": stats.requests_failed,
            "running": self.scheduler.num_running,
            "waiting": self.scheduler.num_waiting,
            "running_loras": self.scheduler.running_loras,
            "registered": list(self._registered),
            "cpu_cache": self._cpu.names(),
            "resident": [a.name for a in self._registered.values() if a.int_id in self._cpu],
            "faults": self.faults.model_dump(),
        }


def _event_at(choice: Choice, step: int) -> TokenEvent | None:
    """The event a choice emits at `step` (None once it has finished)."""
    last = len(choice.pieces) - 1
    if step > last:
        return None
    return TokenEvent(
        choice.index, choice.pieces[step], choice.finish_reason if step == last else None
    )
