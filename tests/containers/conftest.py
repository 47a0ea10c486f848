"""Fixtures of the container tests: the images (built once per session) and the store."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import pytest

from tests.containers.podman import REPO, build_images, unavailable_reason

GATEWAY_UID = 10001  # the gateway image's user, and deploy/k8s's runAsUser and fsGroup


@pytest.fixture(scope="session")
def images() -> None:
    """Both images, built by scripts/build_images.sh (seconds when nothing changed). Skips
    without podman, except in CI, where scripts/install_podman.sh must have installed it."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the container tests: {reason}")
        pytest.skip(reason)
    build_images()


@pytest.fixture(scope="session")
def demo_store_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's demo store (adapters/, base demo-base: the base the deployment files
    serve) as a tarball owned by the gateway's user, as the store volume holds it (Kubernetes:
    fsGroup 10001 makes the volume the gateway's; podman ignores fsGroup)."""

    def owned(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if info.name.endswith(".lock"):
            return None
        info.uid = info.gid = GATEWAY_UID
        info.uname = info.gname = ""
        return info

    path = tmp_path_factory.mktemp("store") / "adapters.tar"
    with tarfile.open(path, "w") as tar:
        # The volume's root too: the gateway writes channels.json, audit.jsonl and uploads.
        tar.add(REPO / "adapters", arcname=".", recursive=False, filter=owned)
        for child in sorted((REPO / "adapters").iterdir()):
            tar.add(child, arcname=child.name, filter=owned)
    return path


@pytest.fixture(scope="session")
def demo_store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo store on the host, owned by the gateway's user (for bind mounts)."""
    root = tmp_path_factory.mktemp("store-dir") / "adapters"
    shutil.copytree(REPO / "adapters", root, ignore=shutil.ignore_patterns("*.lock"))
    for path in [root, *root.rglob("*")]:
        os.chown(path, GATEWAY_UID, GATEWAY_UID)
    return root
