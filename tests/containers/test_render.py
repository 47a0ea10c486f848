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


def test_kustomization_images_are_applied() -> None:
    images = {c["image"] for c in kube.containers(DOCS)}
    assert images == {"loragate-engine:cpu", "loragate-gateway:local"}


def test_render_plays_each_replica_as_its_own_pod_with_local_images() -> None:
    plan = kube.render(DOCS, "p", {"loragate-gateway": 3})
    gateways = plan.pods_of("loragate-gateway")
    assert [p.name for p in gateways] == [f"p-loragate-gateway-{i}-pod-0" for i in range(3)]
    for pod in plan.pods:
        deployment = pod.documents[0]
        assert deployment["spec"]["replicas"] == 1
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert container["image"] in {GATEWAY_IMAGE, SIM_IMAGE}
            assert not {"ports", *kube.PROBES} & set(container), container["name"]
        assert yaml.safe_load_all(pod.yaml())  # what kube play reads
    (engine,) = plan.pods_of("vllm-0")
    args = engine.documents[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["--model", "demo-base"] and "--enable-lora" not in args
    # The declared containers (ports, probes) are kept for the test to probe.
    assert engine.containers[0]["startupProbe"]["httpGet"]["port"] == "http"


def test_render_prefixes_host_wide_names_and_gives_each_pod_its_empty_dirs() -> None:
    plan = kube.render(DOCS, "p", {"loragate-gateway": 2})
    first, second = (p.documents for p in plan.pods_of("loragate-gateway"))
    volumes = [{v["name"]: v for v in d[0]["spec"]["template"]["spec"]["volumes"]}
               for d in (first, second)]  # fmt: skip
    assert volumes[0]["config"]["configMap"]["name"] == "p-loragate-gateway-config"
    assert volumes[0]["adapter-store"]["persistentVolumeClaim"]["claimName"] == "p-adapter-store"
    assert "p-loragate-gateway-0-tmp" in volumes[0] and "p-loragate-gateway-1-tmp" in volumes[1]
    mounts = first[0]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {m["name"] for m in mounts} <= set(volumes[0])
    assert [d["metadata"]["name"] for d in first[1:]] == ["p-loragate-gateway-config"]
    env = first[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0]["valueFrom"]["secretKeyRef"]["name"] == "p-loragate-admin"


def test_render_makes_services_dns_names_and_the_claim_the_writers() -> None:
    plan = kube.render(DOCS, "p")
    (gateway,) = plan.pods_of("loragate-gateway")
    assert gateway.aliases[:2] == ("loragate-gateway", "loragate-gateway.loragate")
    assert "vllm-0.loragate.svc.cluster.local" in plan.pods_of("vllm-0")[0].aliases
    (claim,) = plan.claims
    assert claim["metadata"]["name"] == "p-adapter-store"
    # Written by the gateway (fsGroup 10001); the engine mounts it read-only.
    assert claim["metadata"]["annotations"] == {
        "volume.podman.io/uid": "10001", "volume.podman.io/gid": "10001"}  # fmt: skip
    assert plan.not_played == [("ConfigMap", "loragate-prometheus", "no pod uses it")]


def test_probe_urls_resolve_named_ports() -> None:
    plan = kube.render(DOCS, "p")
    (gateway,) = plan.pods_of("loragate-gateway")
    assert kube.probe_urls(gateway, "10.0.0.9") == [
        ("gateway", "readinessProbe", "http://10.0.0.9:8000/readyz"),
        ("gateway", "livenessProbe", "http://10.0.0.9:8000/healthz"),
    ]


# --- kube.render on what #13 brings, and on what it refuses ----------------------------------


def _engines_as_statefulset() -> list[dict[str, Any]]:
    docs = copy.deepcopy(DOCS)
    for doc in docs:
        if doc["metadata"]["name"] == "vllm-0":
            doc["metadata"]["name"] = "vllm"
            if doc["kind"] == "Deployment":
                doc["kind"] = "StatefulSet"
                doc["spec"].update(replicas=2, serviceName="vllm")
                del doc["spec"]["strategy"]
            else:
                doc["spec"]["clusterIP"] = "None"
    return docs


def test_render_names_statefulset_pods_under_their_headless_service() -> None:
    plan = kube.render(_engines_as_statefulset(), "p")
    engines = plan.pods_of("vllm")
    assert [p.name for p in engines] == ["p-vllm-0-pod-0", "p-vllm-1-pod-0"]
    assert "vllm" in engines[1].aliases and "vllm-1.vllm" in engines[1].aliases
    assert "vllm-1.vllm.loragate.svc.cluster.local" in engines[1].aliases


def test_render_swaps_init_containers_images_too() -> None:
    docs = copy.deepcopy(DOCS)
    spec = next(d for d in docs if d["metadata"]["name"] == "loragate-gateway")["spec"]
    seed = {"name": "seed", "image": "loragate-gateway:local", "args": ["adapters", "list"],
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}  # fmt: skip
    spec["template"]["spec"]["initContainers"] = [seed]
    (gateway,) = kube.render(docs, "p").pods_of("loragate-gateway")
    (init,) = gateway.documents[0]["spec"]["template"]["spec"]["initContainers"]
    assert init["image"] == GATEWAY_IMAGE
    assert init["volumeMounts"] == [{"name": "p-loragate-gateway-0-tmp", "mountPath": "/tmp"}]


def test_render_refuses_what_it_cannot_play_faithfully() -> None:
    docs = copy.deepcopy(DOCS)
    service = next(d for d in docs if d["kind"] == "Service")
    service["spec"]["ports"][0]["port"] = 80  # 80 -> http (8000): a DNS alias cannot remap
    with pytest.raises(ValueError, match="remap"):
        kube.render(docs, "p")
    with pytest.raises(ValueError, match="HorizontalPodAutoscaler"):
        kube.render([*DOCS, {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"}}], "p")
    budget = {"kind": "PodDisruptionBudget", "metadata": {"name": "gw"}}
    assert ("PodDisruptionBudget", "gw", kube.NOT_PLAYED["PodDisruptionBudget"]) in kube.render(
        [*DOCS, budget], "p"
    ).not_played


# --- what the played Kubernetes test needs from #13 ------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="#13 (scale-out) sets the gateway Deployment to 2 replicas; until then "
    "test_kube.py plays two anyway. When #13 lands this XPASSes: remove the mark.",
)
def test_k8s_gateway_deployment_declares_two_replicas() -> None:
    assert _named("Deployment", "loragate-gateway")["spec"]["replicas"] >= 2


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
