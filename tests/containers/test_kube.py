"""deploy/k8s played with `podman kube play`: the gateway Deployment's two replicas, the engine
StatefulSet's two pods (the simulated engine in place of vLLM) behind their headless Service,
the gateways' ConfigMap, and the adapter-store claim they all share.

Runs here: every replica as a pod of its own; the headless Service as a DNS name with one A
record per engine pod (aardvark-dns), which the gateways resolve every discovery_interval_s
and route to each engine by address, as in a cluster; each engine pod's own name
(`vllm-0.vllm-headless...`) and hostname; the ConfigMap as the gateways' config; the
ReadWriteMany claim, written by both gateways and read by both engines; the pods'
securityContext (user, group, read-only root, capabilities), emptyDirs (on disk: a
`medium: Memory` one is no tmpfs here), memory limits (the containers' cgroups); the
gateways' environment (metrics listener on 9464, drain settings); every probe the manifests
declare and every scrape the pods' prometheus.io annotations ask for (run by the test at
their paths and named ports, as the kubelet and Prometheus would); deleting a gateway pod
under traffic (SIGTERM: /readyz 503 at once, the drain delay, the in-flight stream finished,
exit 0, SIGKILL only after terminationGracePeriodSeconds) and deleting an engine pod under
traffic (its adapters re-placed on the other engine); and each one's replacement, played by
the test (podman has no ReplicaSet or StatefulSet controller). Traffic "through the
Service" is balanced by the test over the gateway pods whose readiness probe passes, as
kube-proxy does over endpoints.

Schema only (tests/unit/test_deploy.py; `kube.Plan.schema_only` lists them and
test_render.py pins the list): the PodDisruptionBudget (no eviction API), pod anti-affinity
and topology spread (one node), the Deployment's rolling-update strategy and the
StatefulSet's podManagementPolicy (no controllers), resources.requests (no scheduler),
publishNotReadyAddresses (podman names a pod in DNS when it starts, not when it is ready),
the emptyDir's medium and sizeLimit (a directory on disk here), fsGroup (translated: the
claim is owned by the writers' group), the Namespace, the gateway Service's virtual IP, and
the Prometheus scrape ConfigMap (no Prometheus here). How each document is rendered for
podman, and why: tests/containers/kube.py.

Slow: needs podman (scripts/install_podman.sh) and builds the images (scripts/build_images.sh).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.containers import kube
from tests.containers.cluster import Cluster
from tests.containers.kube import Pod
from tests.containers.kubeplay import KubePlay
from tests.containers.podman import REPO, podman, unique, wait_for
from tests.containers.traffic import ServiceTraffic, Stream, complete

pytestmark = pytest.mark.slow

DOCS = kube.load(REPO / "deploy" / "k8s")
GATEWAY = "loragate-gateway"  # the gateway Deployment, and the Service clients call
ENGINE = "vllm"  # the engines' StatefulSet
SETTINGS = yaml.safe_load(next(
    d["data"]["config.yaml"] for d in DOCS
    if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "loragate-gateway-config"
))  # fmt: skip
(DISCOVERY,) = [e["dns"] for e in SETTINGS["engines"]]  # the headless Service's name:port
DNS_HOST, _, DNS_PORT = DISCOVERY.rpartition(":")
# An engine that comes or goes is in every gateway's /readyz within two DNS re-resolutions
# (the first may just miss it) and a view refresh; and a margin for a busy machine.
DISCOVERY_TIMEOUT_S = 2 * float(SETTINGS["discovery_interval_s"]) + 5.0
BASE = SETTINGS["base_model"]
MODELS = ServiceTraffic.MODELS  # the demo store's adapters, in the claim
# 50 ms a token: a 40-token stream is still in flight when its pod is deleted.
SIM_EXTRA = ["--token-ms", "50", "--answer-tokens", "1000"]
# An engine pod deleted under traffic: the one request in flight on it may fail (see the test).
ENGINE_DELETION_FAILURES = 1


@pytest.fixture(scope="module")
def cluster(
    images: None, demo_store_tar: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    plan = kube.render(DOCS, unique("lgk"), sim_extra=SIM_EXTRA)
    with KubePlay(plan, tmp_path_factory.mktemp("kube")) as play:
        play.play_claims()
        play.fill("adapter-store", demo_store_tar)  # what an operator puts in the RWX store
        cluster = Cluster(plan, play, GATEWAY, ENGINE, int(DNS_PORT))
        for pod in [*cluster.engines(), *cluster.gateways()]:
            cluster.start(pod)
        cluster.await_engines(cluster.engines())
        yield cluster


def test_every_probe_the_manifests_declare_passes(cluster: Cluster) -> None:
    for pod in cluster.plan.pods:
        assert cluster.probes(pod, "readinessProbe"), f"{pod.workload} has no readiness probe"
        for url in cluster.probes(pod, *kube.PROBES):
            assert httpx.get(url, timeout=2).status_code == 200, f"{pod.name}: {url}"


def test_every_pod_serves_metrics_where_its_annotations_say(cluster: Cluster) -> None:
    for pod in cluster.plan.pods:
        url = kube.scrape_url(pod, cluster.play.address(pod))
        assert url is not None, f"{pod.workload} is not scraped"
        scraped = httpx.get(url, timeout=5)
        assert scraped.status_code == 200, f"{pod.name}: {url}"
        assert ("# TYPE loragate_" if pod.workload == GATEWAY else "vllm:") in scraped.text
    # On the API port the metrics are the admin's (no token here): Prometheus uses 9464.
    assert httpx.get(f"{cluster.url(cluster.gateways()[0])}/metrics").status_code == 403


# The container's memory limit in bytes: cgroup v2, else v1.
_MEMORY_LIMIT = (
    "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"
)
_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (`256Mi`, `1Gi`) in bytes."""
    unit = quantity[-2:]
    return int(quantity[:-2]) * _UNITS[unit] if unit in _UNITS else int(quantity)


def test_pods_run_with_the_manifests_security_context_and_volumes(cluster: Cluster) -> None:
    gateway = cluster.gateways()[0]
    status = cluster.exec(gateway, "cat", "/proc/1/status").stdout
    ids = {line.split(":")[0]: line.split()[1:] for line in status.splitlines()}
    assert set(ids["Uid"]) == set(ids["Gid"]) == {"10001"}, status
    assert ids["CapEff"] == ["0000000000000000"], "capabilities: drop: [ALL]"
    assert ids["NoNewPrivs"] == ["1"], "allowPrivilegeEscalation: false"
    refused = cluster.exec(gateway, "touch", "/srv/written")
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    for writable in ("/tmp/written", "/srv/adapters/.written"):  # emptyDir, the shared store
        assert cluster.exec(gateway, "touch", writable).returncode == 0, writable
        cluster.exec(gateway, "rm", writable)
    for pod in cluster.plan.pods:  # resources.limits.memory: the container's cgroup
        (container,) = pod.containers
        limit = _bytes(container["resources"]["limits"]["memory"])
        memory = cluster.exec(pod, "sh", "-c", _MEMORY_LIMIT).stdout.split()
        assert memory == [str(limit)], pod.name
    for pod in cluster.engines():
        assert cluster.exec(pod, "id", "-u").stdout.strip() == "10002"
        assert cluster.exec(pod, "touch", "/srv/adapters/.written").returncode != 0, "store ro"
        hostname = cluster.exec(pod, "cat", "/proc/sys/kernel/hostname").stdout.strip()
        assert hostname == pod.k8s_name  # a StatefulSet's pod: vllm-0, vllm-1


# The addresses a name resolves to, as the gateway resolves them (getaddrinfo).
_RESOLVE = (
    "import socket, sys; "
    "print(*sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], 0, type=socket.SOCK_STREAM)}))"
)


def test_the_headless_service_resolves_to_every_engine_pod(cluster: Cluster) -> None:
    engines = {pod.k8s_name: cluster.play.address(pod) for pod in cluster.engines()}
    for gateway in cluster.gateways():
        # Inside the gateway's own container: its resolv.conf, the network's DNS.
        found = cluster.exec(gateway, "/opt/venv/bin/python", "-c", _RESOLVE, DNS_HOST)
        assert found.stdout.split() == sorted(engines.values()), found.stderr
        for name, address in engines.items():
            # Each pod's own name: vllm-0.vllm-headless.loragate.svc.cluster.local
            own = cluster.exec(
                gateway, "/opt/venv/bin/python", "-c", _RESOLVE, f"{name}.{DNS_HOST}"
            )
            assert own.stdout.split() == [address], (name, own.stderr)


def test_each_gateway_replica_serves_and_routes_to_every_engine(cluster: Cluster) -> None:
    engines = sorted(cluster.engine_name(pod) for pod in cluster.engines())
    for pod in cluster.gateways():
        url = cluster.url(pod)
        ready = httpx.get(f"{url}/readyz").json()
        assert ready["engines_up"] == engines, ready  # found by DNS, named ip:port
        assert ready["adapters"] == 3, ready  # the demo store the claim holds
        for model in MODELS:
            response = complete(url, model)
            assert response.status_code == 200, f"{pod.name}: {response.text}"
            assert response.headers["x-adapter-version"] == f"{model}@v2"
            assert response.headers["x-engine"] in engines
        # The base model goes to the least loaded engine: with a stream held on every engine
        # but one, the next request goes to that one. Every engine serves through each gateway.
        streams = []
        for _ in engines[1:]:
            streams.append(Stream(url, BASE, max_tokens=40).start())
            assert streams[-1].first.wait(30) and streams[-1].status == 200, streams[-1].lines
        last = complete(url, BASE)
        assert last.status_code == 200, last.text
        used = [s.headers["x-engine"] for s in streams] + [last.headers["x-engine"]]
        assert sorted(used) == engines, f"{pod.name} used {used}"
        for stream in streams:
            assert stream.done.wait(30) and stream.finished(), stream.lines[-3:]


def test_the_store_is_one_volume_for_every_pod(cluster: Cluster) -> None:
    first, second = cluster.gateways()[:2]
    assert cluster.exec(first, "sh", "-c", "echo shared > /srv/adapters/.shared").returncode == 0
    try:
        for pod in [second, *cluster.engines()]:
            assert cluster.exec(pod, "cat", "/srv/adapters/.shared").stdout == "shared\n", pod
    finally:
        cluster.exec(first, "rm", "/srv/adapters/.shared")


# --- a gateway pod deleted -------------------------------------------------------------------


@dataclass
class Deletion:
    """What happened when a gateway pod was deleted (SIGTERM, grace period) under traffic."""

    victim: Pod
    traffic: ServiceTraffic
    stream: Stream  # in flight on the victim when it got SIGTERM
    readyz: list[tuple[float, int | None]]  # the victim's /readyz after `kubectl delete`
    stale_endpoint_status: int | None  # a request to the victim right after SIGTERM
    stopped_at: float  # when the pod was gone
    exit_code: int

    def signalled_at(self) -> float:
        """When the victim's /readyz first stopped answering 200."""
        return next(t for t, status in self.readyz if status != 200)


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=1).status_code
    except httpx.HTTPError:
        return None


@pytest.fixture(scope="module")
def deletion(cluster: Cluster) -> Deletion:
    victim, *_ = cluster.gateways()
    urls = {pod.name: cluster.url(pod) for pod in cluster.gateways()}
    readiness = {pod.name: cluster.probes(pod, "readinessProbe")[0] for pod in cluster.gateways()}
    with ServiceTraffic(urls, readiness) as traffic:
        time.sleep(1.5)  # traffic through every replica
        stream = Stream(urls[victim.name], "qa", max_tokens=40).start()
        assert stream.first.wait(30) and stream.status == 200, stream.lines
        deleting = ThreadPoolExecutor(1).submit(cluster.play.delete, victim)
        readyz: list[tuple[float, int | None]] = []

        def signalled() -> bool | None:
            readyz.append((time.monotonic(), _status(readiness[victim.name])))
            return None if readyz[-1][1] == 200 else True

        wait_for("the victim's SIGTERM", signalled, 30, interval=0.02)
        # An endpoint update lags SIGTERM in Kubernetes: requests still arrive for a while.
        try:
            stale: int | None = complete(urls[victim.name], "sentiment", 2, timeout=5).status_code
        except httpx.HTTPError:
            stale = None
        while not deleting.done():
            readyz.append((time.monotonic(), _status(readiness[victim.name])))
            time.sleep(0.2)
        deleting.result()  # raises what the deletion raised
        stopped_at = time.monotonic()
        time.sleep(2.0)  # traffic through the survivors only
    stream.done.wait(30)
    container = cluster.play.container(victim, "gateway")
    state = podman("inspect", "--format", "{{.State.ExitCode}}", container)
    return Deletion(victim, traffic, stream, readyz, stale, stopped_at, int(state.stdout))


def test_gateway_pod_deleted_under_traffic_traffic_continues(deletion: Deletion) -> None:
    sent = deletion.traffic.sent
    before = [s for s in sent if s.at < deletion.signalled_at()]
    assert {s.endpoint for s in before if s.status == 200} == set(deletion.traffic.endpoints)
    after = [s for s in sent if s.at > deletion.stopped_at]
    assert len(after) >= 5, "no traffic after the deletion"
    assert all(s.status == 200 for s in after), after
    assert deletion.victim.name not in {s.endpoint for s in after}
    # The deleted pod finished what it had in flight and exited cleanly, before SIGKILL.
    assert deletion.stream.finished(), deletion.stream.lines[-3:]
    assert deletion.exit_code == 0


def test_gateway_pod_deleted_drains_readyz_503_then_closes(deletion: Deletion) -> None:
    # SIGTERM: /readyz 503 at once (while the listener still answers), for the drain delay
    # (LORAGATE_DRAIN_DELAY_S), then the listener closes.
    statuses = [status for _, status in deletion.readyz]
    first = next(i for i, status in enumerate(statuses) if status != 200)
    assert statuses[first] == 503, deletion.readyz
    assert set(statuses[first:]) <= {503, None}, deletion.readyz  # never ready again
    (container,) = deletion.victim.containers
    env = {e["name"]: e.get("value") for e in container["env"]}
    delay_s = float(env["LORAGATE_DRAIN_DELAY_S"])
    answered = [t for t, status in deletion.readyz if status == 503]
    assert answered[-1] - deletion.signalled_at() >= delay_s - 1.0, deletion.readyz
    assert deletion.stopped_at - deletion.signalled_at() < deletion.victim.grace_s


def test_gateway_pod_deleted_serves_requests_that_arrive_before_its_endpoint_goes(
    deletion: Deletion,
) -> None:
    assert deletion.stale_endpoint_status == 200
    failed = [s for s in deletion.traffic.sent if s.status != 200]
    assert not failed, failed


@pytest.fixture(scope="module")
def replaced_gateway(cluster: Cluster, deletion: Deletion) -> Pod:
    # The ReplicaSet controller's part: podman has none, so the test plays the pod again.
    cluster.start(deletion.victim, replace=True)
    cluster.await_engines(cluster.engines())
    return deletion.victim


def test_a_replacement_gateway_pod_joins_and_serves(
    cluster: Cluster, replaced_gateway: Pod
) -> None:
    url = cluster.url(replaced_gateway)
    for model in MODELS:  # versions other replicas made resident
        response = complete(url, model)
        assert response.status_code == 200, response.text
        assert response.headers["x-adapter-version"] == f"{model}@v2"


# --- an engine pod deleted -------------------------------------------------------------------


@dataclass
class EngineDeletion:
    """What happened when the engine pod serving a stream was deleted under traffic through
    both gateways."""

    pod: Pod
    victim: str  # its engine name (ip:port)
    survivors: list[str]
    held: set[str]  # the adapter versions it held
    stream: Stream  # in flight on it when it got SIGTERM
    traffic: ServiceTraffic
    signalled_at: float  # `kubectl delete pod`
    stopped_at: float  # the pod gone, with its DNS name
    engines_up: list[list[str]]  # each gateway's, once it re-resolved
    survivors_hold: set[str]  # what the survivors hold at the end


@pytest.fixture(scope="module")
def engine_deletion(cluster: Cluster, replaced_gateway: Pod) -> EngineDeletion:
    gateways, engines = cluster.gateways(), cluster.engines()
    urls = {pod.name: cluster.url(pod) for pod in gateways}
    readiness = {pod.name: cluster.probes(pod, "readinessProbe")[0] for pod in gateways}
    with ServiceTraffic(urls, readiness) as traffic:
        time.sleep(2.0)  # every adapter resident somewhere
        stream = Stream(urls[gateways[0].name], "qa", max_tokens=40).start()
        assert stream.first.wait(30) and stream.status == 200, stream.lines
        victim = stream.headers["x-engine"]  # the engine to delete: it holds qa at least
        (pod,) = [e for e in engines if cluster.engine_name(e) == victim]
        held = cluster.adapters(pod)
        survivors = [e for e in engines if e is not pod]
        signalled_at = time.monotonic()
        cluster.play.delete(pod)
        stopped_at = time.monotonic()
        cluster.await_engines(survivors, DISCOVERY_TIMEOUT_S)
        time.sleep(2.0)  # traffic on the survivors only
    stream.done.wait(30)
    return EngineDeletion(
        pod, victim, [cluster.engine_name(e) for e in survivors], held, stream, traffic,
        signalled_at, stopped_at, [cluster.engines_up(g) for g in gateways],
        set().union(*(cluster.adapters(e) for e in survivors)),
    )  # fmt: skip


def test_engine_pod_deleted_its_adapters_are_re_placed(engine_deletion: EngineDeletion) -> None:
    deleted = engine_deletion
    assert "qa@v2" in deleted.held, deleted.held
    before = [s for s in deleted.traffic.sent if s.at < deleted.signalled_at]
    assert deleted.victim in {s.engine for s in before}, "it served traffic before"
    assert deleted.engines_up == [deleted.survivors] * len(deleted.engines_up)
    assert deleted.held <= deleted.survivors_hold
    after = [s for s in deleted.traffic.sent if s.at > deleted.stopped_at]
    assert {s.engine for s in after} == set(deleted.survivors), after


def test_engine_pod_deleted_requests_keep_succeeding(engine_deletion: EngineDeletion) -> None:
    sent = engine_deletion.traffic.sent
    # The traffic has one request in flight at a time; the one in flight when the engine got
    # SIGTERM may fail (the simulated engine, as vLLM, aborts what outlives its shutdown).
    # Later ones are not lost: a connection the engine refuses is retried on another by
    # the gateway, and the gateways stop choosing it at its first refusal.
    failed = [s for s in sent if s.status != 200]
    assert len(failed) <= ENGINE_DELETION_FAILURES, failed
    assert all(engine_deletion.signalled_at <= s.at <= engine_deletion.stopped_at for s in failed)
    assert all(s.status is not None for s in failed), "the gateway answered each"
    after = [s for s in sent if s.at > engine_deletion.stopped_at]
    assert len(after) >= 10 and all(s.status == 200 for s in after), after
    assert {s.endpoint for s in after} == set(engine_deletion.traffic.endpoints)


def test_engine_pod_deleted_its_in_flight_stream_ends_with_an_error_event(
    engine_deletion: EngineDeletion,
) -> None:
    # Its first bytes went out with status 200: the failure can only be an SSE error event,
    # then [DONE], so the client knows (no hang, no silently short answer).
    stream = engine_deletion.stream
    assert stream.done.is_set() and stream.error is None, stream.error
    assert [c for c in stream.chunks() if "error" in c], stream.lines[-3:]
    assert stream.lines[-1].strip() == "data: [DONE]"


def test_a_replacement_engine_pod_is_discovered_by_every_gateway(
    cluster: Cluster, engine_deletion: EngineDeletion
) -> None:
    # The StatefulSet controller's part: the same pod name again, maybe another address.
    cluster.start(engine_deletion.pod, replace=True)
    cluster.await_engines(cluster.engines(), DISCOVERY_TIMEOUT_S)  # re-resolved, checked
    for gateway in cluster.gateways():
        for model in MODELS:
            response = complete(cluster.url(gateway), model)
            assert response.status_code == 200, response.text
