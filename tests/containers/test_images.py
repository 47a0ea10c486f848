"""The gateway image run as it ships: its own non-root user, a config and a store mounted, in
front of the simulated engine's image on a podman network (the engine found by the name the
config gives it, as in deploy/compose.yaml). Checks the endpoints, a completion, a stream, the
images' HEALTHCHECKs, and SIGTERM inside the container.

Slow: needs podman (scripts/install_podman.sh) and builds the images (scripts/build_images.sh).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from loadtest.threaded import free_port
from tests.containers.conftest import GATEWAY_UID
from tests.containers.podman import (
    GATEWAY_IMAGE,
    SIM_IMAGE,
    http_ok,
    logs,
    podman,
    unique,
    wait_for,
)
from tests.containers.traffic import Stream, complete

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("images")]

# The engine: the deployment files' capacity; 50 ms per token so a 40-token stream is still
# running when the gateway gets SIGTERM.
ENGINE_ARGS = ["--host", "0.0.0.0", "--port", "8000", "--model", "demo-base",
               "--max-loras", "2", "--max-cpu-loras", "4", "--max-lora-rank", "8",
               "--token-ms", "50", "--answer-tokens", "1000"]  # fmt: skip
CONFIG = {
    "store": "/srv/adapters",
    "base_model": "demo-base",
    "max_lora_rank": 8,
    "engines": [{"name": "engine-0", "url": "http://engine:8000", "max_cpu_loras": 4}],
    "reconcile_interval_s": 1,
    "log_json": True,
    "drain_delay_s": 1.0,  # SIGTERM: /readyz 503, still serving for 1 s, then close
}
READY_TIMEOUT_S = 60.0


@dataclass
class Stack:
    network: str
    engine: str
    config: Path
    store: Path
    gateways: list[str] = field(default_factory=list)

    def run_gateway(self) -> tuple[str, str]:
        """Start a gateway container (the image's own user and command); (name, url) once
        /readyz answers 200."""
        name, port = unique("loragate-gw"), free_port()
        self.gateways.append(name)
        podman("run", "--detach", "--name", name, "--network", self.network,
               "--publish", f"127.0.0.1:{port}:8000",
               "--volume", f"{self.config}:/etc/loragate/config.yaml:ro",
               "--volume", f"{self.store}:/srv/adapters", GATEWAY_IMAGE)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(f"{name} /readyz", lambda: http_ok(f"{url}/readyz"), READY_TIMEOUT_S)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{logs(name)}") from None
        return name, url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, demo_store_dir: Path) -> Iterator[Stack]:
    config = tmp_path_factory.mktemp("gateway") / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    network = unique("loragate-net")
    podman("network", "create", network)
    stack = Stack(network, unique("loragate-engine"), config, demo_store_dir)
    try:
        # The engine reads the adapter directories the gateway names: the store, same path.
        podman("run", "--detach", "--name", stack.engine, "--network", f"{network}:alias=engine",
               "--volume", f"{demo_store_dir}:/srv/adapters:ro", SIM_IMAGE, *ENGINE_ARGS)  # fmt: skip
        yield stack
    finally:
        for name in [*stack.gateways, stack.engine]:
            podman("rm", "--force", "--time", "0", name, check=False)
        podman("network", "rm", "--force", network, check=False)


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> tuple[str, str]:
    return stack.run_gateway()


def test_gateway_runs_as_its_non_root_user(gateway: tuple[str, str]) -> None:
    name, _ = gateway
    status = podman("exec", name, "cat", "/proc/1/status").stdout
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uids) == {str(GATEWAY_UID)}, status
    # PID 1 is the gateway itself (no shell in between), so SIGTERM reaches it.
    cmdline = podman("exec", name, "cat", "/proc/1/cmdline").stdout.split("\0")
    assert cmdline[1:4] == ["/opt/venv/bin/loragate", "serve", "--config"], cmdline


def test_healthz_and_readyz(gateway: tuple[str, str]) -> None:
    _, url = gateway
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["engines_up"] == ["engine-0"]
    assert ready.json()["adapters"] == 3  # qa, sentiment, summarize from the mounted store


def test_completion_through_the_engine(gateway: tuple[str, str]) -> None:
    _, url = gateway
    response = complete(url, "sentiment", max_tokens=4)
    assert response.status_code == 200, response.text
    assert response.headers["x-adapter-version"] == "sentiment@v2"
    body = response.json()
    assert body["usage"]["completion_tokens"] == 4
    assert body["choices"][0]["text"].startswith("[sentiment@v2]")  # the engine ran the adapter


def test_stream_ends_with_done(gateway: tuple[str, str]) -> None:
    _, url = gateway
    stream = Stream(url, "summarize", max_tokens=6).start()
    assert stream.done.wait(30)
    assert stream.status == 200 and stream.finished(), stream.lines
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in stream.chunks())
    assert text.strip()


def test_healthchecks(gateway: tuple[str, str], stack: Stack) -> None:
    name, _ = gateway
    for container in (name, stack.engine):
        check = podman("healthcheck", "run", container, check=False)
        assert check.returncode == 0, f"{container}: {check.stdout}{check.stderr}"
        assert podman("inspect", "--format", "{{.State.Health.Status}}", container).stdout.strip() == "healthy"  # fmt: skip
    # A gateway that no longer answers is reported: the check probes the server itself.
    podman("kill", "--signal", "STOP", name)
    try:
        check = podman("healthcheck", "run", name, check=False)
    finally:
        podman("kill", "--signal", "CONT", name)
    assert check.returncode == 1 and "unhealthy" in check.stdout


# --- SIGTERM inside the container ------------------------------------------------------------


@dataclass
class AfterSigterm:
    """What a client saw after `podman kill --signal TERM` while a stream was in flight."""

    stream: Stream
    readyz: list[tuple[float, int | None]]  # (seconds after the signal, status; None: refused)
    completion_status: int | None  # a completion sent once /readyz said 503
    exit_code: int
    exit_s: float
    logs: str


@pytest.fixture(scope="module")
def after_sigterm(stack: Stack) -> AfterSigterm:
    name, url = stack.run_gateway()
    stream = Stream(url, "qa", max_tokens=40).start()  # ~2 s at the engine's 50 ms a token
    assert stream.first.wait(30) and stream.status == 200, stream.lines
    podman("kill", "--signal", "TERM", name)
    start = time.monotonic()
    readyz: list[tuple[float, int | None]] = []
    completion: int | None = None
    while time.monotonic() - start < 2.0:
        try:
            status: int | None = httpx.get(f"{url}/readyz", timeout=1.0).status_code
        except httpx.TransportError:
            status = None
        readyz.append((time.monotonic() - start, status))
        if status == 503 and completion is None:
            completion = complete(url, "sentiment", max_tokens=2).status_code
        if status is None and any(s == 503 for _, s in readyz):
            break  # draining was seen and is over: nothing more to learn
        time.sleep(0.05)
    stream.done.wait(30)
    try:
        waited = podman("wait", name, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the gateway did not exit within 60 s of SIGTERM\n{logs(name)}")
    return AfterSigterm(stream, readyz, completion, int(waited.stdout.strip()),
                        time.monotonic() - start, logs(name))  # fmt: skip


def test_sigterm_finishes_the_in_flight_stream_and_exits_0(after_sigterm: AfterSigterm) -> None:
    stream = after_sigterm.stream
    assert stream.finished(), f"in-flight stream cut: {stream.lines[-3:]} {stream.error!r}"
    assert len([c for c in stream.chunks() if c["choices"] and c["choices"][0]["delta"].get("content")]) == 40  # fmt: skip
    assert after_sigterm.exit_code == 0, after_sigterm.logs


def test_sigterm_drains_readyz_503_at_once_and_keeps_serving(after_sigterm: AfterSigterm) -> None:
    # DESIGN.md: SIGTERM -> /readyz 503 at once, keep serving for a short delay, stop
    # accepting, finish in-flight within a grace period, exit 0.
    first_503 = next((t for t, status in after_sigterm.readyz if status == 503), None)
    assert first_503 is not None and first_503 < 1.0, after_sigterm.readyz
    assert after_sigterm.completion_status == 200, "a request in the drain delay was refused"
