"""SIGTERM drains the gateway the Kubernetes way, on a real `loragate serve` process:
/readyz answers 503 at once, requests are still served for drain_delay_s, then the listener
closes, the stream in flight finishes, and the process exits 0 within the grace period."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from loadtest.simengine import SimConfig, SimEngineServer
from loadtest.threaded import free_port
from loadtest.tool.tinystore import TINY_CONFIG
from server.store.store import AdapterStore

DELAY_S, GRACE_S = 1.5, 10.0


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "loragate serve exited"
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the gateway did not become ready")


def test_sigterm_drains_then_exits_0(tiny_store: AdapterStore, tmp_path: Path) -> None:
    sim_config = SimConfig(model="tiny-base", max_loras=2, max_cpu_loras=2, token_ms=50)
    with SimEngineServer(sim_config) as sim:
        base_config = tmp_path / "base.json"
        base_config.write_text(json.dumps(TINY_CONFIG))
        port = free_port()
        config = tmp_path / "gateway.yaml"
        config.write_text(json.dumps({
            "store": str(tiny_store.root), "base_model": "tiny-base",
            "base_config": str(base_config), "engines": [{"url": sim.url}],
            "port": port, "metrics_port": 0, "drain_delay_s": DELAY_S,
            "drain_grace_s": GRACE_S, "log_json": False,
        }))  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "server.cli.main", "serve", "--config", str(config)]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(url, proc)
            timeline = drain(url, proc)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert timeline["exit_code"] == 0
    assert timeline["readyz_503_s"] < 0.5  # at once
    assert timeline["served_during_delay"] == 200
    assert timeline["refused_after_delay"]  # the listener is closed
    assert timeline["stream_ended_with_done"] and timeline["stream_done_s"] > DELAY_S
    assert timeline["exit_s"] < DELAY_S + GRACE_S


def drain(url: str, proc: subprocess.Popen[bytes]) -> dict[str, float]:
    """Start a 2 s stream, SIGTERM, and time what a client sees."""
    stream_body = {"model": "alpha", "prompt": "x", "max_tokens": 40, "stream": True}
    result: dict[str, float] = {}  # seconds since SIGTERM, status codes, booleans as 0/1
    started = threading.Event()

    def stream() -> None:
        with httpx.stream("POST", f"{url}/v1/completions", json=stream_body, timeout=30) as r:
            body = b""
            for chunk in r.iter_bytes():
                body += chunk
                started.set()
        result["stream_ended_with_done"] = float(body.endswith(b"data: [DONE]\n\n"))
        result["stream_done_s"] = time.monotonic() - t0

    t0 = time.monotonic()
    reader = threading.Thread(target=stream)
    reader.start()
    assert started.wait(10)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    while httpx.get(f"{url}/readyz", timeout=2).status_code != 503:
        time.sleep(0.01)
    result["readyz_503_s"] = time.monotonic() - t0
    quick = {"model": "alpha", "prompt": "x", "max_tokens": 1}
    result["served_during_delay"] = httpx.post(
        f"{url}/v1/completions", json=quick, timeout=5
    ).status_code
    time.sleep(max(0.0, DELAY_S + 0.5 - (time.monotonic() - t0)))
    try:
        httpx.get(f"{url}/healthz", timeout=1)
        result["refused_after_delay"] = 0.0
    except httpx.TransportError:
        result["refused_after_delay"] = 1.0
    result["exit_code"] = proc.wait(timeout=GRACE_S + DELAY_S + 5)
    result["exit_s"] = time.monotonic() - t0
    reader.join(10)
    return result
