"""podman for tests: run its commands, build the images once, find addresses, wait.

The runtime comes from scripts/install_podman.sh (root, runc, netavark); the images from
scripts/build_images.sh (the top-level Dockerfile on a local Debian base).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

REPO = Path(__file__).resolve().parents[2]
GATEWAY_IMAGE = "localhost/loragate-gateway:local"
SIM_IMAGE = "localhost/loragate-sim:local"
BUILD_TIMEOUT_S = 900.0  # a fresh machine: debootstrap (~60 s) and two builds with pip
# podman prints these on every command here (no syslog, no systemd for healthcheck timers);
# dropped from error messages so the real error is readable.
_NOISE = ("failed to connect to syslog", "unable to get systemd connection")

T = TypeVar("T")


class PodmanError(RuntimeError):
    """A podman command exited non-zero (raised by `podman(..., check=True)`)."""


def unavailable_reason() -> str | None:
    """Why these tests cannot run here, or None when they can."""
    if shutil.which("podman") is None:
        return "podman not installed: run scripts/install_podman.sh"
    if os.geteuid() != 0:
        return "the container tests run rootful podman: run them as root"
    return None


def unique(prefix: str) -> str:
    """A name no other run uses (podman's volumes, networks and pods are host-wide)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def podman(
    *args: str, check: bool = True, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run `podman ARGS`; raises PodmanError when it fails and `check` is set."""
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise PodmanError(f"podman {' '.join(args)} exited {done.returncode}: {errors(done)}")
    return done


def errors(done: subprocess.CompletedProcess[str]) -> str:
    """stderr without the lines podman prints on every command here."""
    lines = done.stderr.splitlines()
    return "\n".join(line for line in lines if not any(n in line for n in _NOISE)).strip()


def build_images() -> float:
    """Build (or reuse) both images; returns the seconds it took."""
    start = time.monotonic()
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "build_images.sh")],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise PodmanError(f"scripts/build_images.sh failed:\n{done.stdout}\n{done.stderr}")
    return time.monotonic() - start


def inspect(name: str, kind: str = "container") -> dict[str, Any]:
    data = json.loads(podman(kind, "inspect", name).stdout)
    found: dict[str, Any] = data[0] if isinstance(data, list) else data  # pods: one object
    return found


def ip_address(container: str, network: str) -> str:
    """The address of `container` (or of a pod's infra container) on `network`."""
    networks = inspect(container)["NetworkSettings"]["Networks"]
    address: str = networks[network]["IPAddress"]
    return address


def pod_ip(pod: str, network: str) -> str:
    return ip_address(inspect(pod, "pod")["InfraContainerID"], network)


def logs(container: str, tail: int = 30) -> str:
    done = podman("logs", "--tail", str(tail), container, check=False)
    return (done.stdout + done.stderr).strip()


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.2) -> T:
    """Call `probe` until it returns something other than None; AssertionError after
    `timeout` seconds (naming `what` and the last exception the probe raised)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except (httpx.HTTPError, OSError, PodmanError) as exc:
            last, result = exc, None
        if result is not None:
            return result
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last error: {last!r})")


def http_ok(url: str, timeout: float = 2.0) -> bool | None:
    """True when GET `url` answers 200 (a probe for `wait_for`)."""
    return True if httpx.get(url, timeout=timeout).status_code == 200 else None
