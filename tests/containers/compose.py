"""deploy/compose.yaml rendered for podman-compose (PyPI, scripts/install_podman.sh) here.

The rest is run as written: the gateway's mounted config (deploy/loragate.compose.yaml), the
adapter-store volume shared by the gateway and the engine at the same path (filled from the
gateway image's demo store on first start), the engine's network alias, environment, the
images' healthchecks.

- engine-cpu: the simulated engine image, its vLLM command translated (sim.py), instead of
  deploy/engine.Dockerfile built on the vLLM image (no registry here).
- gateway: `build` dropped: the image is the one scripts/build_images.sh built under the name
  compose gives it (compose would build on the default BASE, the official Python image, which
  no registry serves here).
- published ports: 127.0.0.1 on a free port instead of 8000 (a developer's gateway may hold it).
- relative paths made absolute (the rendered file lives in a temporary directory).
- Not run: prometheus and grafana (their images cannot be pulled here; promtool and the
  dashboard tests check their files), engine-gpu (no GPU): only the services named on `up`.
"""

from __future__ import annotations

import copy
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.containers.podman import SIM_IMAGE
from tests.containers.sim import sim_args

RUN = ("engine-cpu", "gateway")  # the services `up` starts; the profile that selects the engine
PROFILE = "cpu"


def render(
    compose: Mapping[str, Any],
    deploy: Path,
    ports: Mapping[str, int],
    sim_extra: Sequence[str] = (),
) -> dict[str, Any]:
    """deploy/compose.yaml (loaded from `deploy`) for this machine; `ports[service]` is the
    host port each published port of that service moves to."""
    rendered = copy.deepcopy(dict(compose))
    services: dict[str, Any] = rendered["services"]
    engine = services["engine-cpu"]
    engine.pop("build")
    engine["image"] = SIM_IMAGE
    engine["command"] = sim_args(engine["command"], sim_extra)
    services["gateway"].pop("build")
    for name, service in services.items():
        if "ports" in service:
            service["ports"] = [_moved(p, ports.get(name)) for p in service["ports"]]
        service["volumes"] = [_absolute(v, deploy) for v in service.get("volumes", [])]
    return rendered


def _moved(port: str, host_port: int | None) -> str:
    if host_port is None:
        return port
    host_ip, _, container = port.split(":")  # ValueError for another form: decide here
    return f"{host_ip}:{host_port}:{container}"


def _absolute(volume: str, deploy: Path) -> str:
    source, _, rest = volume.partition(":")
    if source.startswith("."):
        return f"{(deploy / source).resolve()}:{rest}"
    return volume


def podman_compose() -> list[str] | None:
    """The podman-compose command of this environment (installed into the venv), or None."""
    beside = Path(sys.executable).with_name("podman-compose")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("podman-compose")
    return [found] if found else None
