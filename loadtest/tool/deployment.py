"""A simulated deployment on loopback for a scenario's `sim` section: a tiny store, simulated
vLLM engines, loragate replicas in front of them, and (with `compare_direct`) a second set of
engines used bare, every adapter registered up front, as a vLLM deployment without a gateway.

Servers run in their own processes by default (their own GIL, as in production; the load
generator is this process) or, with `processes: false`, in threads of this process (fast to
start: the smoke tests).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import yaml

from loadtest.threaded import free_port
from loadtest.tool.scenario import SimSpec
from loadtest.tool.targets import Target
from loadtest.tool.tinystore import TINY_BASE_ID, TinyStore, build

START_TIMEOUT_S = 60.0


@dataclass
class Deployment:
    targets: list[Target]
    adapters: list[str]  # popularity order: adapter-00 …, then the releases
    api_keys: list[str] = field(default_factory=list)
    workdir: Path | None = None
    pids: dict[str, int] = field(default_factory=dict)  # server name -> process (profiling)


def sim_args(spec: SimSpec, port: int) -> list[str]:
    """`python -m loadtest.simengine` arguments for one engine of `spec`."""
    values = {
        "--port": port,
        "--model": TINY_BASE_ID,
        "--max-loras": spec.max_loras or spec.slots,
        "--max-cpu-loras": spec.slots,
        "--max-num-seqs": spec.max_num_seqs,
        "--load-ms": spec.load_ms,
        "--load-jitter-ms": spec.load_jitter_ms,
        "--ttft-ms": spec.ttft_ms,
        "--token-ms": spec.token_ms,
    }
    return [item for key, value in values.items() for item in (key, str(value))]


@contextlib.contextmanager
def _process(args: list[str], ready_url: str, log: Path, env: dict[str, str]) -> Iterator[int]:
    """A server in its own process (yields its pid), stopped (SIGTERM, then SIGKILL) on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{args[2]} did not start ({ready_url}):\n{tail}")
            time.sleep(0.1)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class _Launcher:
    """Starts servers for one deployment; everything started is stopped with `stack`."""

    stack: contextlib.ExitStack
    spec: SimSpec
    workdir: Path
    pids: dict[str, int]

    def engine(self, name: str) -> str:
        spec = self.spec
        if not spec.processes:
            from loadtest.sim.config import SimConfig
            from loadtest.sim.server import SimEngineServer

            config = SimConfig(
                model=TINY_BASE_ID,
                max_loras=spec.max_loras or spec.slots,
                max_cpu_loras=spec.slots,
                max_num_seqs=spec.max_num_seqs,
                load_ms=spec.load_ms,
                load_jitter_ms=spec.load_jitter_ms,
                ttft_ms=spec.ttft_ms,
                token_ms=spec.token_ms,
            )
            return self.stack.enter_context(SimEngineServer(config)).url
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        args = [sys.executable, "-m", "loadtest.simengine", *sim_args(spec, port)]
        log = self.workdir / f"{name}.log"
        running = _process(args, f"{url}/health", log, dict(os.environ))
        self.pids[name] = self.stack.enter_context(running)
        return url

    def gateway(self, settings: dict[str, Any], token: str, name: str) -> str:
        if not self.spec.processes:
            from loadtest.gateway_server import GatewayServer
            from server.settings import Settings

            config = Settings(**settings, admin_token=token, log_json=False)
            return self.stack.enter_context(GatewayServer(config)).url
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        config_file = self.workdir / f"{name}.yaml"
        config_file.write_text(yaml.safe_dump(settings))
        args = [sys.executable, "-m", "server.cli.main", "serve", "--config", str(config_file)]
        env = {**os.environ, "LORAGATE_ADMIN_TOKEN": token}
        log = self.workdir / f"{name}.log"
        running = _process([*args, "--port", str(port)], f"{url}/readyz", log, env)
        self.pids[name] = self.stack.enter_context(running)
        return url


def _gateway_settings(
    spec: SimSpec, store: TinyStore, engines: list[str], workdir: Path
) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "store": str(store.root),
        "base_model": TINY_BASE_ID,
        "base_config": str(store.base_config),
        "engines": [{"url": url, "max_cpu_loras": spec.slots} for url in engines],
        "rollback_window_s": spec.rollback_window_s,
        "load_wait_timeout_s": spec.load_wait_timeout_s,
        "log_dir": str(workdir / "logs"),
        # No separate metrics listener (replicas share this host): /metrics on the API port,
        # which answers the admin token the tool holds.
        "metrics_port": None,
        **spec.gateway,
    }
    if spec.tenants:
        settings["tenants_file"] = str(workdir / "tenants.yaml")
    return settings


def _tenant_keys(spec: SimSpec, workdir: Path) -> list[str]:
    """`spec.tenants` tenants that may use everything; their (random) keys."""
    keys = [f"sk-loadtest-{i}-{secrets.token_hex(8)}" for i in range(spec.tenants)]
    tenants = {
        f"tenant-{i}": {
            "keys_sha256": [hashlib.sha256(key.encode()).hexdigest()],
            "adapters": ["*"],
            "allow_base": True,
        }
        for i, key in enumerate(keys)
    }
    if keys:
        (workdir / "tenants.yaml").write_text(yaml.safe_dump({"tenants": tenants}))
    return keys


def _register_everything(engines: list[str], store: TinyStore) -> dict[str, str]:
    """Direct engines: every adapter's stable version registered on every engine."""
    models = {}
    for name, version in store.stable.items():
        models[name] = f"{name}@{version}"
        body = {"lora_name": models[name], "lora_path": str(store.root / name / version)}
        for url in engines:
            httpx.post(f"{url}/v1/load_lora_adapter", json=body, timeout=30).raise_for_status()
    return models


@contextlib.contextmanager
def simulated(spec: SimSpec, workdir: Path | None = None) -> Iterator[Deployment]:
    """Start everything `spec` describes; stop it all on exit. Raises RuntimeError when a
    server does not start (with the end of its log)."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="loadtest-")))
        store = build(workdir, spec)
        deployment = Deployment([], store.adapters, _tenant_keys(spec, workdir), workdir)
        token = secrets.token_hex(16)
        launch = _Launcher(stack, spec, workdir, deployment.pids)
        if spec.gateways:
            engines = [launch.engine(f"engine-{i}") for i in range(spec.engines)]
            settings = _gateway_settings(spec, store, engines, workdir)
            urls = tuple(
                launch.gateway(settings, token, f"gateway-{i}") for i in range(spec.gateways)
            )
            gateway = Target("loragate", urls, admin_token=token, store=store.root)
            deployment.targets.append(_with_sim(gateway, engines, store, TINY_BASE_ID))
        if spec.compare_direct:
            engines = [launch.engine(f"direct-{i}") for i in range(spec.engines)]
            models = _register_everything(engines, store)
            direct = Target("direct", tuple(engines), models=models)
            deployment.targets.append(_with_sim(direct, engines, store, TINY_BASE_ID))
        yield deployment


def _with_sim(target: Target, engines: list[str], store: TinyStore, base: str) -> Target:
    return replace(target, sim_urls=tuple(engines), incoming=store.incoming, base_model=base)
