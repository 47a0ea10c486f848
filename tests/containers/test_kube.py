"""deploy/k8s played with `podman kube play`: the engine Deployment (the simulated engine in
place of vLLM), two gateway replicas, their ConfigMap, the adapter-store claim they share with
the engine, and the Services' names.

Runs here: the Deployments (one pod per replica), the ConfigMap as the gateway's config, the
PersistentVolumeClaim shared by the gateways and the engine, the Services as DNS names (the
gateways find `vllm-0` by the name their config gives), the pods' securityContext (user, group,
read-only root, capabilities), emptyDirs, memory limits, every probe the manifests declare (run
by the test as the kubelet would, at their paths and named ports), deleting a gateway pod
(SIGTERM, grace period) under traffic, and its replacement (played by the test: podman has no
controller). Traffic "through the Service" is balanced by the test over the pods whose
readiness probe passes, as kube-proxy does over endpoints.
Schema only (tests/unit/test_deploy.py): the Namespace, Service ports and virtual IPs,
resources.requests, fsGroup, the rollout strategy, the Prometheus scrape ConfigMap. How each
document is rendered for podman, and why: tests/containers/kube.py.

Slow: needs podman (scripts/install_podman.sh) and builds the images (scripts/build_images.sh).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.containers import kube
from tests.containers.kube import Pod
from tests.containers.kubeplay import KubePlay
from tests.containers.podman import REPO, logs, podman, unique, wait_for
from tests.containers.traffic import ServiceTraffic, Stream, complete

pytestmark = pytest.mark.slow

DOCS = kube.load(REPO / "deploy" / "k8s")
GATEWAY = "loragate-gateway"  # the gateway Deployment, and the Service clients call
GATEWAY_CONFIG = yaml.safe_load(next(
    d["data"]["config.yaml"] for d in DOCS
    if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "loragate-gateway-config"
))  # fmt: skip
# The engines as the gateways name them (X-Engine, metrics labels).
ENGINE_NAMES = [e.get("name", f"engine-{i}") for i, e in enumerate(GATEWAY_CONFIG["engines"])]
DECLARED_GATEWAYS = next(d["spec"].get("replicas", 1) for d in DOCS
                         if d["kind"] == "Deployment" and d["metadata"]["name"] == GATEWAY)  # fmt: skip
# deploy/k8s declares 1 until #13 (scale-out) makes it 2; this test plays two either way.
GATEWAYS = max(DECLARED_GATEWAYS, 2)
# 50 ms a token: a 40-token stream is still in flight when its pod is deleted.
SIM_EXTRA = ["--token-ms", "50", "--answer-tokens", "1000"]
READY_TIMEOUT_S = 60.0  # the gateway re-checks a down engine every reconcile_interval_s (15)
GRACE_S = 30  # Kubernetes' default terminationGracePeriodSeconds


@dataclass
class Cluster:
    plan: kube.Plan
    play: KubePlay

    def gateways(self) -> list[Pod]:
        return self.plan.pods_of(GATEWAY)

    def engines(self) -> list[Pod]:
        return [pod for pod in self.plan.pods if pod.workload != GATEWAY]

    def url(self, pod: Pod) -> str:
        (container,) = pod.containers
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
        return f"http://{self.play.address(pod)}:{port}"

    def probes(self, pod: Pod, *kinds: str) -> list[str]:
        address = self.play.address(pod)
        return [url for _, kind, url in kube.probe_urls(pod, address) if kind in kinds]

    def logs(self, pod: Pod) -> str:
        return "\n".join(logs(f"{pod.name}-{c['name']}") for c in pod.containers)

    def start(self, pod: Pod, replace: bool = False) -> None:
        """Play `pod` and wait until its startup and readiness probes pass."""
        self.play.play(pod, replace=replace)

        def ready() -> bool | None:
            urls = self.probes(pod, "startupProbe", "readinessProbe")
            return True if all(httpx.get(u, timeout=2).status_code < 400 for u in urls) else None

        try:
            wait_for(f"{pod.name} ready", ready, READY_TIMEOUT_S)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs(pod)}") from None


@pytest.fixture(scope="module")
def cluster(
    images: None, demo_store_tar: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    plan = kube.render(DOCS, unique("lgk"), {GATEWAY: GATEWAYS}, SIM_EXTRA)
    with KubePlay(plan, tmp_path_factory.mktemp("kube")) as play:
        play.play_claims()
        play.fill("adapter-store", demo_store_tar)  # what an operator puts in the RWX store
        cluster = Cluster(plan, play)
        # Engines first: a gateway that starts before its engine waits a reconcile interval.
        for pod in [*cluster.engines(), *cluster.gateways()]:
            cluster.start(pod)
        yield cluster


def _container(pod: Pod, name: str) -> str:
    return f"{pod.name}-{name}"


def _exec(container: str, *command: str) -> subprocess.CompletedProcess[str]:
    return podman("exec", container, *command, check=False)


def test_every_probe_the_manifests_declare_passes(cluster: Cluster) -> None:
    for pod in cluster.plan.pods:
        assert cluster.probes(pod, "readinessProbe"), f"{pod.workload} has no readiness probe"
        for url in cluster.probes(pod, *kube.PROBES):
            assert httpx.get(url, timeout=2).status_code == 200, f"{pod.name}: {url}"


def test_pods_run_with_the_manifests_security_context_and_volumes(cluster: Cluster) -> None:
    gateway = _container(cluster.gateways()[0], "gateway")
    status = _exec(gateway, "cat", "/proc/1/status").stdout
    ids = {line.split(":")[0]: line.split()[1:] for line in status.splitlines()}
    assert set(ids["Uid"]) == set(ids["Gid"]) == {"10001"}, status
    assert ids["CapEff"] == ["0000000000000000"], "capabilities: drop: [ALL]"
    assert ids["NoNewPrivs"] == ["1"], "allowPrivilegeEscalation: false"
    refused = _exec(gateway, "touch", "/srv/written")
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    for writable in ("/tmp/written", "/srv/adapters/.written"):  # emptyDir, the shared store
        assert _exec(gateway, "touch", writable).returncode == 0, writable
        _exec(gateway, "rm", writable)
    for pod in cluster.engines():
        (container,) = pod.containers
        engine = _container(pod, container["name"])
        assert _exec(engine, "id", "-u").stdout.strip() == "10002"
        assert _exec(engine, "touch", "/srv/adapters/.written").returncode != 0, "store ro"


def test_each_gateway_replica_serves_through_the_engine_service(cluster: Cluster) -> None:
    for pod, model in zip(cluster.gateways(), ("sentiment", "qa", "summarize"), strict=False):
        url = cluster.url(pod)
        ready = httpx.get(f"{url}/readyz").json()
        assert sorted(ready["engines_up"]) == sorted(ENGINE_NAMES), ready
        assert ready["adapters"] == 3, ready  # the demo store the claim holds
        response = complete(url, model)
        assert response.status_code == 200, f"{pod.name}: {response.text}"
        assert response.headers["x-adapter-version"] == f"{model}@v2"
        assert response.headers["x-engine"] in ENGINE_NAMES
    # The store is one volume: a file one replica writes, the other reads.
    first, second = (_container(p, "gateway") for p in cluster.gateways()[:2])
    assert _exec(first, "sh", "-c", "echo shared > /srv/adapters/.shared").returncode == 0
    try:
        assert _exec(second, "cat", "/srv/adapters/.shared").stdout == "shared\n"
    finally:
        _exec(first, "rm", "/srv/adapters/.shared")


@dataclass
class Deletion:
    """What happened when a gateway pod was deleted (SIGTERM, grace period) under traffic."""

    victim: Pod
    traffic: ServiceTraffic
    stream: Stream  # in flight on the victim when it got SIGTERM
    signalled_at: float  # when the victim's /readyz first stopped answering 200
    stopped_at: float  # when the pod was gone
    stale_endpoint_status: int | None  # a request to the victim right after SIGTERM
    exit_code: int


@pytest.fixture(scope="module")
def deletion(cluster: Cluster) -> Deletion:
    victim, *_ = cluster.gateways()
    urls = {pod.name: cluster.url(pod) for pod in cluster.gateways()}
    readiness = {pod.name: cluster.probes(pod, "readinessProbe")[0] for pod in cluster.gateways()}
    with ServiceTraffic(urls, readiness) as traffic:
        time.sleep(1.5)  # traffic through every replica
        stream = Stream(urls[victim.name], "qa", max_tokens=40).start()
        assert stream.first.wait(30) and stream.status == 200, stream.lines
        deleting = ThreadPoolExecutor(1).submit(cluster.play.delete, victim, GRACE_S)

        def signalled() -> float | None:
            try:
                ok = httpx.get(readiness[victim.name], timeout=1).status_code == 200
            except httpx.HTTPError:
                ok = False
            return None if ok else time.monotonic()

        signalled_at = wait_for("the victim's SIGTERM", signalled, 30, interval=0.02)
        # An endpoint update lags SIGTERM in Kubernetes: requests still arrive for a while.
        try:
            stale: int | None = complete(urls[victim.name], "sentiment", 2, timeout=5).status_code
        except httpx.HTTPError:
            stale = None
        deleting.result(timeout=GRACE_S + 60)  # raises what the deletion raised
        stopped_at = time.monotonic()
        time.sleep(2.0)  # traffic through the survivors only
    stream.done.wait(30)
    state = podman("inspect", "--format", "{{.State.ExitCode}}", _container(victim, "gateway"))
    return Deletion(victim, traffic, stream, signalled_at, stopped_at, stale,
                    int(state.stdout.strip()))  # fmt: skip


def test_gateway_pod_deleted_under_traffic_traffic_continues(deletion: Deletion) -> None:
    sent = deletion.traffic.sent
    before = [s for s in sent if s.at < deletion.signalled_at]
    assert {s.endpoint for s in before if s.status == 200} == set(deletion.traffic.endpoints)
    after = [s for s in sent if s.at > deletion.stopped_at]
    assert len(after) >= 5, "no traffic after the deletion"
    assert all(s.status == 200 for s in after), after
    assert deletion.victim.name not in {s.endpoint for s in after}
    # The deleted pod finished what it had in flight and exited cleanly.
    assert deletion.stream.finished(), deletion.stream.lines[-3:]
    assert deletion.exit_code == 0


def test_gateway_pod_deleted_serves_requests_that_arrive_before_its_endpoint_goes(
    deletion: Deletion,
) -> None:
    assert deletion.stale_endpoint_status == 200
    failed = [s for s in deletion.traffic.sent if s.status != 200]
    assert not failed, failed


def test_a_replacement_gateway_pod_joins_and_serves(cluster: Cluster, deletion: Deletion) -> None:
    # The ReplicaSet controller's part: podman has none, so the test plays the pod again.
    cluster.start(deletion.victim, replace=True)
    url = cluster.url(deletion.victim)
    for model in ("sentiment", "qa", "summarize"):  # versions other replicas made resident
        response = complete(url, model)
        assert response.status_code == 200, response.text
        assert response.headers["x-adapter-version"] == f"{model}@v2"
