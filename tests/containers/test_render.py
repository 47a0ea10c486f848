"""How the deployment files are rendered for podman (fast: no podman needed). The slow tests
beside this file play what these functions produce."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests.containers import compose, kube
from tests.containers.podman import GATEWAY_IMAGE, REPO, SIM_IMAGE
from tests.containers.sim import sim_args

DOCS = kube.load(REPO / "deploy" / "k8s")
COMPOSE = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())


def _named(kind: str, name: str) -> dict[str, Any]:
    return next(d for d in DOCS if d["kind"] == kind and d["metadata"]["name"] == name)


# --- sim_args --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vllm", "sim"),
    [
        (["--model", "/m", "--served-model-name", "base", "--enable-lora", "--max-loras", "2"],
         ["--model", "base", "--max-loras", "2"]),
        (["--model", "/m", "--dtype", "float32", "--max-cpu-loras=4", "--port", "8000"],
         ["--max-cpu-loras", "4", "--port", "8000", "--model", "/m"]),
        (["python3", "-m", "vllm.entrypoints.openai.api_server", "--served-model-name", "b"],
         ["--model", "b"]),
    ],
)  # fmt: skip
def test_sim_args_keep_what_the_simulated_engine_understands(
    vllm: list[str], sim: list[str]
) -> None:
    assert sim_args(vllm) == sim
    assert sim_args(vllm, ["--token-ms", "5"]) == [*sim, "--token-ms", "5"]


def test_sim_args_refuse_a_command_without_a_model() -> None:
    with pytest.raises(ValueError, match="--model"):
        sim_args(["--max-loras", "2"])


# --- kube.render on deploy/k8s ---------------------------------------------------------------

PLAN = kube.render(DOCS, "p")
GATEWAYS = PLAN.pods_of("loragate-gateway")
ENGINES = PLAN.pods_of("vllm")
SETTINGS = yaml.safe_load(_named("ConfigMap", "loragate-gateway-config")["data"]["config.yaml"])


def _spec(pod: kube.Pod) -> dict[str, Any]:
    """The pod spec podman plays."""
    spec: dict[str, Any] = pod.documents[0]["spec"]["template"]["spec"]
    return spec


def _volumes(pod: kube.Pod) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in _spec(pod)["volumes"]}


def test_kustomization_images_are_applied() -> None:
    images = {c["image"] for c in kube.containers(DOCS)}
    assert images == {"loragate-engine:cpu", "loragate-gateway:local"}


def test_render_plays_each_replica_as_its_own_pod_with_local_images() -> None:
    # As declared (2 gateway replicas, 2 engines): each replica a pod of its own.
    gateways = _named("Deployment", "loragate-gateway")["spec"]["replicas"]
    engines = _named("StatefulSet", "vllm")["spec"]["replicas"]
    assert gateways >= 2 and engines >= 2
    assert [p.name for p in GATEWAYS] == [f"p-loragate-gateway-{i}-pod-0" for i in range(gateways)]
    assert [p.name for p in ENGINES] == [f"p-vllm-{i}-pod-0" for i in range(engines)]
    assert len(PLAN.pods) == gateways + engines
    for pod in PLAN.pods:
        deployment = pod.documents[0]
        assert deployment["kind"] == "Deployment" and deployment["spec"]["replicas"] == 1
        for container in _spec(pod)["containers"]:
            assert container["image"] in {GATEWAY_IMAGE, SIM_IMAGE}
            assert not {"ports", *kube.PROBES} & set(container), container["name"]
        assert yaml.safe_load_all(pod.yaml())  # what kube play reads
    args = _spec(ENGINES[0])["containers"][0]["args"]
    assert args[:2] == ["--model", "demo-base"] and "--enable-lora" not in args
    assert args[args.index("--max-cpu-loras") + 1] == str(SETTINGS["engines"][0]["max_cpu_loras"])
    # The declared containers (ports, probes) are kept for the test to probe.
    assert ENGINES[0].containers[0]["startupProbe"]["httpGet"]["port"] == "http"
    assert kube.render(DOCS, "p", {"vllm": 3}).pods_of("vllm")[2].name == "p-vllm-2-pod-0"


def test_render_names_statefulset_pods_under_their_headless_service() -> None:
    (engines,) = [d for d in DOCS if d["kind"] == "StatefulSet"]
    service = engines["spec"]["serviceName"]
    assert _named("Service", service)["spec"]["clusterIP"] == "None"
    host = SETTINGS["engines"][0]["dns"].rpartition(":")[0]  # what the gateways resolve
    for i, pod in enumerate(ENGINES):
        assert pod.k8s_name == f"vllm-{i}" and _spec(pod)["hostname"] == f"vllm-{i}"
        # Both pods answer to the headless name (one A record each), each to its own name.
        assert host in pod.aliases and service in pod.aliases
        assert f"vllm-{i}.{service}.loragate.svc.cluster.local" in pod.aliases
        assert f"vllm-{1 - i}.{service}" not in pod.aliases
    for pod in GATEWAYS:
        assert host not in pod.aliases and "hostname" not in _spec(pod)
        assert pod.aliases[:2] == ("loragate-gateway", "loragate-gateway.loragate")


def test_render_keeps_the_gateways_metrics_port_and_drain_settings() -> None:
    template = _named("Deployment", "loragate-gateway")["spec"]["template"]
    (declared,) = template["spec"]["containers"]
    for pod in GATEWAYS:
        # Not played as a port (podman would publish it), kept for the test to scrape.
        metrics = pod.port("metrics")
        assert str(metrics) == pod.annotations["prometheus.io/port"] != str(pod.port("http"))
        assert kube.scrape_url(pod, "10.0.0.9") == f"http://10.0.0.9:{metrics}/metrics"
        (container,) = _spec(pod)["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["LORAGATE_METRICS_HOST"] == "0.0.0.0"  # reachable from outside the pod
        assert env["LORAGATE_METRICS_PORT"] == str(metrics)
        assert {"LORAGATE_DRAIN_DELAY_S", "LORAGATE_DRAIN_GRACE_S"} <= set(env)
        assert container["env"][1:] == declared["env"][1:]  # all but the renamed secret
        # Played as the kubelet would: SIGKILL only after the declared grace period.
        assert pod.grace_s == template["spec"]["terminationGracePeriodSeconds"]
    assert ENGINES[0].grace_s == kube.DEFAULT_GRACE_S
    assert kube.scrape_url(ENGINES[0], "10.0.0.9") == "http://10.0.0.9:8000/metrics"


def test_render_shares_the_rwx_claim_and_gives_each_pod_its_empty_dirs() -> None:
    (claim,) = PLAN.claims
    assert claim["metadata"]["name"] == "p-adapter-store"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    # Written by the gateways (fsGroup 10001); the engines mount it read-only.
    assert claim["metadata"]["annotations"] == {
        "volume.podman.io/uid": "10001", "volume.podman.io/gid": "10001"}  # fmt: skip
    for pod in PLAN.pods:
        volumes = _volumes(pod)
        store = volumes["adapter-store"]["persistentVolumeClaim"]
        assert store["claimName"] == "p-adapter-store", pod.name
        mounts = {m["name"]: m for c in _spec(pod)["containers"] for m in c["volumeMounts"]}
        assert mounts["adapter-store"]["mountPath"] == "/srv/adapters"
        engine = pod in ENGINES
        assert (
            bool(store.get("readOnly")) is bool(mounts["adapter-store"].get("readOnly")) is engine
        )
        assert set(mounts) <= set(volumes)
    # emptyDirs: one volume per pod (podman would share one per name across pods).
    assert "p-loragate-gateway-0-tmp" in _volumes(GATEWAYS[0])
    assert "p-loragate-gateway-1-tmp" in _volumes(GATEWAYS[1])
    assert "p-vllm-1-shm" in _volumes(ENGINES[1])
    volumes = _volumes(GATEWAYS[0])
    assert volumes["config"]["configMap"]["name"] == "p-loragate-gateway-config"
    documents = GATEWAYS[0].documents
    assert [d["metadata"]["name"] for d in documents[1:]] == ["p-loragate-gateway-config"]
    env = _spec(GATEWAYS[0])["containers"][0]["env"]
    assert env[0]["valueFrom"]["secretKeyRef"]["name"] == "p-loragate-admin"


def test_render_lists_what_runs_by_schema_only() -> None:
    schema_only = {(what, where) for what, where, _ in PLAN.schema_only}
    assert schema_only == {
        ("Deployment loragate-gateway", "spec.strategy"),
        ("Deployment loragate-gateway", "spec.template.spec.affinity"),
        ("Deployment loragate-gateway", "spec.template.spec.topologySpreadConstraints"),
        ("Deployment loragate-gateway",
         "spec.template.spec.containers[gateway].resources.requests"),
        ("StatefulSet vllm", "spec.podManagementPolicy"),
        ("StatefulSet vllm", "spec.template.spec.affinity"),
        ("StatefulSet vllm", "spec.template.spec.containers[vllm].resources.requests"),
        ("StatefulSet vllm", "spec.template.spec.volumes[shm].emptyDir.medium"),
        ("StatefulSet vllm", "spec.template.spec.volumes[shm].emptyDir.sizeLimit"),
        ("Service vllm-headless", "spec.publishNotReadyAddresses"),
    }  # fmt: skip
    assert PLAN.not_played == [
        ("PodDisruptionBudget", "loragate-gateway", kube.NOT_PLAYED["PodDisruptionBudget"]),
        ("ConfigMap", "loragate-prometheus", "no pod uses it"),
    ]
    for pod in PLAN.pods:  # what is schema only is still in what podman reads
        assert "affinity" in _spec(pod)
        assert _spec(pod)["containers"][0]["resources"]["requests"]


def test_probe_urls_resolve_named_ports() -> None:
    assert kube.probe_urls(GATEWAYS[1], "10.0.0.9") == [
        ("gateway", "readinessProbe", "http://10.0.0.9:8000/readyz"),
        ("gateway", "livenessProbe", "http://10.0.0.9:8000/healthz"),
    ]
    assert [kind for _, kind, _ in kube.probe_urls(ENGINES[0], "a")] == list(kube.PROBES)


# --- kube.render on what it refuses ----------------------------------------------------------


def test_render_swaps_init_containers_images_too() -> None:
    docs = copy.deepcopy(DOCS)
    spec = next(d for d in docs if d["metadata"]["name"] == "loragate-gateway")["spec"]
    seed = {"name": "seed", "image": "loragate-gateway:local", "args": ["adapters", "list"],
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}  # fmt: skip
    spec["template"]["spec"]["initContainers"] = [seed]
    gateway = kube.render(docs, "p").pods_of("loragate-gateway")[0]
    (init,) = _spec(gateway)["initContainers"]
    assert init["image"] == GATEWAY_IMAGE
    assert init["volumeMounts"] == [{"name": "p-loragate-gateway-0-tmp", "mountPath": "/tmp"}]


def _with(kind: str, name: str, path: str, value: Any) -> list[dict[str, Any]]:
    """DOCS with `value` set at the dotted `path` of the named document."""
    docs = copy.deepcopy(DOCS)
    target: Any = next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)
    *parents, last = (int(key) if key.isdigit() else key for key in path.split("."))
    for key in parents:
        target = target[key]
    target[last] = value
    return docs


@pytest.mark.parametrize(
    ("docs", "match"),
    [
        # 80 -> http (8000): a DNS alias cannot remap a port.
        (_with("Service", "loragate-gateway", "spec.ports.0.port", 80), "remap"),
        (_with("Service", "loragate-gateway", "spec.type", "LoadBalancer"), "LoadBalancer"),
        ([*DOCS, {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"}}],
         "HorizontalPodAutoscaler"),
        # Fields podman may not run as Kubernetes does: decided in kube.FIELDS first.
        (_with("Deployment", "loragate-gateway", "spec.template.spec.hostNetwork", True),
         "spec.template.spec.hostNetwork"),
        (_with("Deployment", "loragate-gateway",
               "spec.template.spec.containers.0.lifecycle", {"preStop": {}}),
         r"containers\[gateway\].lifecycle"),
        (_with("StatefulSet", "vllm", "spec.template.spec.containers.0.resources.claims", []),
         r"resources.claims"),
        (_with("StatefulSet", "vllm", "spec.volumeClaimTemplates", [{}]), "volumeClaimTemplates"),
        (_with("StatefulSet", "vllm", "spec.template.spec.volumes.1",
               {"name": "shm", "hostPath": {"path": "/dev/shm"}}), r"volumes\[shm\].hostPath"),
    ],
)  # fmt: skip
def test_render_refuses_what_it_cannot_play_faithfully(
    docs: list[dict[str, Any]], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        kube.render(docs, "p")


def test_render_lists_a_budget_as_not_played() -> None:
    budget = {"kind": "PodDisruptionBudget", "metadata": {"name": "gw"}}
    assert ("PodDisruptionBudget", "gw", kube.NOT_PLAYED["PodDisruptionBudget"]) in kube.render(
        [*DOCS, budget], "p"
    ).not_played


# --- compose.render --------------------------------------------------------------------------


def test_compose_render_swaps_the_engine_and_moves_published_ports() -> None:
    rendered = compose.render(COMPOSE, REPO / "deploy", {"gateway": 18000}, ["--token-ms", "5"])
    engine, gateway = rendered["services"]["engine-cpu"], rendered["services"]["gateway"]
    assert engine["image"] == SIM_IMAGE and "build" not in engine
    assert engine["command"][:2] == ["--model", "demo-base"]
    assert engine["command"][-2:] == ["--token-ms", "5"]
    assert gateway["image"] == "loragate-gateway:local" and "build" not in gateway
    assert gateway["ports"] == ["127.0.0.1:18000:8000"]
    assert rendered["services"]["prometheus"]["ports"] == ["127.0.0.1:9090:9090"]  # not run
    config = f"{REPO / 'deploy' / 'loragate.compose.yaml'}:/etc/loragate/config.yaml:ro"
    assert config in gateway["volumes"] and "adapter-store:/srv/adapters" in gateway["volumes"]
    assert COMPOSE["services"]["engine-cpu"]["image"] == "loragate-engine:cpu"  # not mutated
