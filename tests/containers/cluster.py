"""A played deploy/k8s seen as the tests use it: the gateway and engine pods, their addresses,
their probes, the engines each gateway routes to, commands inside a pod."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from tests.containers import kube
from tests.containers.kube import Pod
from tests.containers.kubeplay import KubePlay
from tests.containers.podman import logs, podman, wait_for

READY_TIMEOUT_S = 60.0


@dataclass
class Cluster:
    plan: kube.Plan
    play: KubePlay
    gateway: str  # the gateways' Deployment
    engine: str  # the engines' StatefulSet
    engine_port: int  # where the gateways call the engines (the port of their DNS entry)

    def gateways(self) -> list[Pod]:
        return self.plan.pods_of(self.gateway)

    def engines(self) -> list[Pod]:
        return self.plan.pods_of(self.engine)

    def url(self, pod: Pod) -> str:
        return f"http://{self.play.address(pod)}:{pod.port('http')}"

    def engine_name(self, pod: Pod) -> str:
        """What the gateways call the engine `pod` (X-Engine, /readyz, metrics): ip:port."""
        return f"{self.play.address(pod)}:{self.engine_port}"

    def probes(self, pod: Pod, *kinds: str) -> list[str]:
        address = self.play.address(pod)
        return [url for _, kind, url in kube.probe_urls(pod, address) if kind in kinds]

    def logs(self, pod: Pod) -> str:
        return "\n".join(logs(self.play.container(pod, c["name"])) for c in pod.containers)

    def exec(self, pod: Pod, *command: str) -> subprocess.CompletedProcess[str]:
        """`command` in the pod's (only) container."""
        (container,) = pod.containers
        return podman("exec", self.play.container(pod, container["name"]), *command, check=False)

    def start(self, pod: Pod, replace: bool = False) -> None:
        """Play `pod` and wait until its startup and readiness probes pass."""
        self.play.play(pod, replace=replace)

        def ready() -> bool | None:
            urls = self.probes(pod, "startupProbe", "readinessProbe")
            return True if all(httpx.get(u, timeout=2).status_code < 400 for u in urls) else None

        self._wait(pod, f"{pod.name} ready", ready)

    def engines_up(self, gateway: Pod) -> list[str]:
        """The engines `gateway` routes to (its /readyz)."""
        up: list[str] = httpx.get(f"{self.url(gateway)}/readyz", timeout=2).json()["engines_up"]
        return up

    def await_engines(self, engines: list[Pod], timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until every gateway routes to exactly `engines` (DNS, then a healthy view)."""
        names = sorted(self.engine_name(pod) for pod in engines)
        for gateway in self.gateways():

            def routes(g: Pod = gateway) -> bool | None:
                return True if self.engines_up(g) == names else None

            self._wait(gateway, f"{gateway.name} routes to {names}", routes, timeout)

    def adapters(self, engine: Pod) -> set[str]:
        """The adapter versions `engine` holds, as it reports them (vLLM's /v1/models)."""
        models = httpx.get(f"{self.url(engine)}/v1/models", timeout=5).json()["data"]
        return {m["id"] for m in models if m.get("parent")}

    def _wait(
        self,
        pod: Pod,
        what: str,
        probe: Callable[[], bool | None],
        timeout: float = READY_TIMEOUT_S,
    ) -> None:
        try:
            wait_for(what, probe, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs(pod)}") from None
