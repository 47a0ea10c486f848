"""deploy/compose.yaml run with podman-compose: the CPU profile's engine (the simulated engine
in place of vLLM) and the gateway with its mounted config and the shared adapter-store volume.
What is rendered for this machine, and what does not run here: tests/containers/compose.py.

Slow: needs podman and podman-compose (scripts/install_podman.sh) and the images.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import httpx
import pytest
import yaml

from loadtest.threaded import free_port
from tests.containers import compose
from tests.containers.podman import REPO, http_ok, podman, unique, wait_for
from tests.containers.traffic import Stream, complete

pytestmark = pytest.mark.slow

DEPLOY = REPO / "deploy"
READY_TIMEOUT_S = 60.0  # the gateway re-checks an engine that was not up every 15 s
ADMIN_TOKEN = "compose-test-admin-token"  # compose passes LORAGATE_ADMIN_TOKEN through


def _run(command: list[str], timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LORAGATE_ADMIN_TOKEN": ADMIN_TOKEN}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def project(images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(project name, the gateway's URL) once /readyz answers 200."""
    tool = compose.podman_compose()
    if tool is None:
        pytest.fail("podman-compose is not installed: run scripts/install_podman.sh")
    port = free_port()
    rendered = compose.render(yaml.safe_load((DEPLOY / "compose.yaml").read_text()), DEPLOY,
                              {"gateway": port})  # fmt: skip
    path = tmp_path_factory.mktemp("compose") / "compose.yaml"
    path.write_text(yaml.safe_dump(rendered, sort_keys=False))
    name = unique("loragate")
    base = [*tool, "--project-name", name, "--file", str(path), "--profile", compose.PROFILE]
    try:
        _run([*base, "up", "--detach", *compose.RUN])
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for("the gateway's /readyz", lambda: http_ok(f"{url}/readyz"), READY_TIMEOUT_S)
        except AssertionError as exc:
            logs = subprocess.run([*base, "logs"], capture_output=True, text=True, timeout=60)
            raise AssertionError(f"{exc}\n{logs.stdout[-3000:]}") from None
        yield name, url
    finally:
        subprocess.run([*base, "down", "--volumes"], capture_output=True, timeout=180)


def test_compose_gateway_serves_through_the_engine_alias(project: tuple[str, str]) -> None:
    _, url = project
    assert httpx.get(f"{url}/healthz").status_code == 200
    ready = httpx.get(f"{url}/readyz").json()
    # deploy/loragate.compose.yaml names the engine engine-0 at http://engine:8000 (an alias).
    assert ready["engines_up"] == ["engine-0"], ready
    # The adapter-store volume took the gateway image's demo store on first start.
    assert ready["adapters"] == 3, ready
    response = complete(url, "sentiment")
    assert response.status_code == 200, response.text
    # The engine loaded the version from the same volume, at the path the gateway gave it.
    assert response.json()["choices"][0]["text"].startswith("[sentiment@v2]")
    stream = Stream(url, "summarize", max_tokens=4).start()
    assert stream.done.wait(30) and stream.finished(), stream.lines


def test_compose_containers_are_healthy_and_the_engine_is_not_published(
    project: tuple[str, str],
) -> None:
    name, _ = project
    containers = podman("ps", "--filter", f"label=io.podman.compose.project={name}",
                        "--format", "{{.Names}}").stdout.split()  # fmt: skip
    assert len(containers) == 2, containers
    for container in containers:
        check = podman("healthcheck", "run", container, check=False)
        assert check.returncode == 0, f"{container}: {check.stdout}{check.stderr}"
        ports = podman("port", container, check=False).stdout.strip()
        if "engine" in container:
            assert ports == "", f"the engine is published: {ports}"
        else:
            assert ports.startswith("8000/tcp -> 127.0.0.1:"), ports


def test_compose_gateway_can_change_its_store(project: tuple[str, str]) -> None:
    # The admin API writes the shared volume (channels.json, audit.jsonl and its lock at the
    # store's root): the gateway, not the engine that mounts it read-only, must own it.
    _, url = project
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for action in ("pin", "unpin"):
        response = httpx.post(f"{url}/admin/adapters/sentiment/versions/v1/{action}",
                              headers=headers, timeout=10)  # fmt: skip
        assert response.status_code == 200, f"{action}: {response.text}"
