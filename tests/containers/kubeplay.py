"""A `kube.Plan` played with `podman kube play` on a network of its own, and pods deleted as
`kubectl delete pod` deletes them. Podman has no controllers: the tests play a deleted pod's
replacement themselves."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.containers.kube import Plan, Pod
from tests.containers.podman import SIM_IMAGE, inspect, pod_ip, podman


class KubePlay:
    """Plays a Plan on a network of its own; `close()` removes every pod, volume and the
    network it made (podman's kube play leaves ConfigMap and claim volumes behind)."""

    def __init__(self, plan: Plan, workdir: Path) -> None:
        self.plan = plan
        self.network = plan.prefix
        self.workdir = workdir
        self.played: list[Pod] = []

    def __enter__(self) -> KubePlay:
        podman("network", "create", self.network)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def play_claims(self) -> None:
        for claim in self.plan.claims:
            path = self.workdir / f"{claim['metadata']['name']}.yaml"
            path.write_text(yaml.safe_dump(claim, sort_keys=False))
            # --network: without one podman creates a host-wide default network and keeps it.
            podman("kube", "play", "--network", self.network, str(path))

    def fill(self, claim: str, tarball: Path) -> None:
        """Put `tarball`'s files into the volume of `claim` (before any pod mounts it)."""
        volume = self.plan.volume(claim)
        podman("volume", "import", volume, str(tarball))
        # podman makes a new volume's root the property of the first container that mounts it
        # (read-only or not, whatever its uid annotation says): mount it once as its owner, or
        # the engine, another user, would take the store from the gateway.
        owner = inspect(volume, "volume")
        podman("run", "--rm", "--network", "none", "--user", f"{owner['UID']}:{owner['GID']}",
               "--volume", f"{volume}:/store", "--entrypoint", "true", SIM_IMAGE)  # fmt: skip

    def play(self, pod: Pod, replace: bool = False) -> None:
        """Play `pod` (`replace`: a pod of that name, stopped or not, is removed first)."""
        path = self.workdir / f"{pod.name}.yaml"
        path.write_text(pod.yaml())
        network = self.network
        if pod.aliases:
            network += ":" + ",".join(f"alias={alias}" for alias in pod.aliases)
        self.played.append(pod)
        options = ["--replace"] if replace else []
        podman("kube", "play", *options, "--network", network, str(path))

    def address(self, pod: Pod) -> str:
        return pod_ip(pod.name, self.network)

    def container(self, pod: Pod, name: str) -> str:
        """podman's name for the container `name` of `pod`."""
        return f"{pod.name}-{name}"

    def delete(self, pod: Pod) -> None:
        """`kubectl delete pod`: SIGTERM to its containers, SIGKILL after the pod's
        terminationGracePeriodSeconds, then the pod's sandbox and with it its network and its
        DNS names. (`podman pod stop` would stop the infra container with the others, which
        takes the pod's network away while its containers still drain.)"""
        names = [self.container(pod, c["name"]) for c in pod.containers]
        podman("stop", "--time", str(pod.grace_s), *names, timeout=pod.grace_s + 30)
        podman("pod", "stop", "--time", "0", pod.name)

    def close(self) -> None:
        pods = sorted({pod.name for pod in self.played})
        if pods:  # stop, then rm: `pod rm --force` takes seconds a pod here
            podman("pod", "stop", "--time", "0", *pods, check=False)
            podman("pod", "rm", "--force", *pods, check=False)
        names = podman("volume", "ls", "--format", "{{.Name}}", check=False).stdout.split()
        volumes = [name for name in names if name.startswith(f"{self.plan.prefix}-")]
        if volumes:
            podman("volume", "rm", "--force", *volumes, check=False)
        podman("network", "rm", "--force", self.network, check=False)
