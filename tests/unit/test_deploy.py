"""deploy/: the compose file, the Dockerfiles (hadolint-style rules), the Kubernetes manifests
and the Prometheus configuration, checked without Docker, a cluster or Grafana.

`promtool` checks are marked slow: they need Debian's prometheus package, which
`make prometheus` (scripts/install_prometheus.sh) installs before the slow suite runs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadtest import dashboards
from server.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
ENGINES = ("engine-cpu", "engine-gpu")
DOCKERFILES = [REPO / "Dockerfile", DEPLOY / "engine.Dockerfile"]
K8S = {
    path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
}
K8S_DOCS = [doc for docs in K8S.values() for doc in docs]
JOBS = {"loragate", "vllm"}  # the scrape job names alerts.yml and the dashboards select on


# --- compose ---------------------------------------------------------------------------------


def _bind_sources(service: dict[str, Any]) -> list[str]:
    mounts = [v if isinstance(v, str) else v.get("source", "") for v in service.get("volumes", [])]
    return [m.split(":")[0] for m in mounts if m.startswith((".", "/"))]


def test_compose_names_only_files_that_exist() -> None:
    for name, service in SERVICES.items():
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert context.is_dir(), name
            assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file(), name
        for source in _bind_sources(service):
            assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
        for env_file in service.get("env_file", []):
            assert (DEPLOY / env_file).is_file(), f"{name}: {env_file}"


def test_compose_publishes_no_engine_port_and_binds_to_loopback() -> None:
    assert set(SERVICES) == {*ENGINES, "gateway", "prometheus", "grafana"}
    for name in ENGINES:
        engine = SERVICES[name]
        assert "ports" not in engine, f"{name} must not be published"
        assert engine["networks"]["default"]["aliases"] == ["engine"]
        assert engine["profiles"] == [name.removeprefix("engine-")]
    for name in ("gateway", "prometheus", "grafana"):
        for port in SERVICES[name]["ports"]:
            assert port.startswith("127.0.0.1:"), f"{name}: {port} is published beyond loopback"


def test_gateway_config_is_mounted_valid_and_points_at_the_engine(tmp_path: Path) -> None:
    gateway = SERVICES["gateway"]
    assert "./loragate.compose.yaml:/etc/loragate/config.yaml:ro" in gateway["volumes"]
    assert "/etc/loragate/config.yaml" in (REPO / "Dockerfile").read_text()
    settings = Settings.load(DEPLOY / "loragate.compose.yaml")
    assert [e.url for e in settings.engines] == ["http://engine:8000"]
    # The gateway sends engines paths inside its store: same volume at the same path.
    store = f"adapter-store:{settings.store}"
    assert store in gateway["volumes"]
    for name in ENGINES:
        assert f"{store}:ro" in SERVICES[name]["volumes"]


def test_prometheus_and_grafana_are_wired_to_each_other() -> None:
    prom = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in prom["scrape_configs"]
    }
    assert targets == {"loragate": ["gateway:9464"], "vllm": ["engine:8000"]}
    assert "./prometheus:/etc/prometheus:ro" in SERVICES["prometheus"]["volumes"]
    source = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    (datasource,) = source["datasources"]
    assert datasource["uid"] == dashboards.DATASOURCE_UID
    assert datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/dashboards.yml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{path}:ro" in SERVICES["grafana"]["volumes"]


# --- Dockerfiles -----------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        pending += raw.rstrip().removesuffix("\\") + " "
        if not raw.rstrip().endswith("\\"):
            lines.append(pending.strip())
            pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _resolve_args(path: Path, text: str) -> str:
    defaults = dict(
        arg.split("=", 1) for kind, arg in instructions(path) if kind == "ARG" and "=" in arg
    )
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults.get(m[1] or m[2], m[0]), text)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_rules(path: Path) -> None:
    steps = instructions(path)
    stages: set[str] = set()
    for kind, args in steps:
        if kind == "FROM":  # DL3006/DL3007: an explicit, versioned tag (or a digest)
            image, *alias = _resolve_args(path, args).split()
            if alias:
                stages.add(alias[-1])
            if image in stages:
                continue
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            assert "@sha256:" in image or (re.search(r"\d", tag) and tag != "latest"), image
        if kind == "ADD":  # DL3020-style: never fetch URLs at build time
            assert not re.search(r"https?://", args), f"ADD of a URL: {args}"
        if kind == "RUN":  # DL3042: no pip cache in layers
            for command in re.split(r"&&|;", args):
                if re.search(r"\bpip3?\b.*\binstall\b", command):
                    assert "--no-cache-dir" in command, command
        if kind == "COPY" and "--from=" not in args:
            *sources, _ = [a for a in args.split() if not a.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), f"{path.name}: COPY source {source!r} is missing"
    last_from = max(i for i, (kind, _) in enumerate(steps) if kind == "FROM")
    final = steps[last_from:]
    users = [args.strip() for kind, args in final if kind == "USER"]
    assert users and users[-1] not in {"root", "0"}, "the final stage must run as a non-root USER"
    checks = [args for kind, args in final if kind == "HEALTHCHECK"]
    assert checks and not checks[-1].strip().upper().startswith("NONE"), "no HEALTHCHECK"


# --- Kubernetes ------------------------------------------------------------------------------


def _named(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in K8S_DOCS if d["kind"] == kind}


def _workloads() -> dict[str, dict[str, Any]]:
    return {**_named("Deployment"), **_named("StatefulSet")}


def test_k8s_manifests_are_complete_and_in_the_kustomization() -> None:
    kustomization = K8S["kustomization.yaml"][0]
    assert set(kustomization["resources"]) == set(K8S) - {"kustomization.yaml"}
    kinds = {d["kind"] for d in K8S_DOCS}
    assert {
        "Deployment",
        "StatefulSet",
        "Service",
        "ConfigMap",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
    } <= kinds
    for doc in K8S_DOCS:
        if doc["kind"] not in {"Namespace", "Kustomization"}:
            assert doc["metadata"]["namespace"] == "loragate", doc["metadata"]["name"]
    assert _named("PersistentVolumeClaim")["adapter-store"]["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]


@pytest.mark.parametrize("name", sorted(_workloads()))
def test_k8s_deployment(name: str) -> None:
    deployment = _workloads()[name]
    template = deployment["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert labels["loragate.dev/scrape-job"] in JOBS
    spec = template["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    for container in spec["containers"]:
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        # The gateway's metrics have their own listener (metrics_port); vLLM's are on http.
        assert str(ports.get("metrics", ports["http"])) == annotations["prometheus.io/port"]
        assert container["resources"]["requests"] and container["readinessProbe"], name
        assert container["livenessProbe"], name
    for volume in spec["volumes"]:
        if "configMap" in volume:
            assert volume["configMap"]["name"] in _named("ConfigMap")
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            assert claim in _named("PersistentVolumeClaim")
    mounts = {m["mountPath"]: m for c in spec["containers"] for m in c["volumeMounts"]}
    assert "/srv/adapters" in mounts  # the same store path in the gateway and every engine


def _gateway_settings(tmp_path: Path) -> Settings:
    config = tmp_path / "config.yaml"
    config.write_text(_named("ConfigMap")["loragate-gateway-config"]["data"]["config.yaml"])
    return Settings.load(config)


def test_k8s_services_select_pods_and_gateway_config_names_them(tmp_path: Path) -> None:
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in _workloads().values()]
    services = _named("Service")
    for name, service in services.items():
        selector = service["spec"]["selector"].items()
        assert any(selector <= labels.items() for labels in pods), f"{name} selects no pod"
    settings = _gateway_settings(tmp_path)
    assert settings.engines
    for engine in settings.engines:
        # Engines come from DNS: the headless Service of the engines' StatefulSet.
        assert engine.dns is not None and engine.url is None
        host, port = engine.dns.rsplit(":", 1)
        service = services[host.split(".")[0]]
        assert host in (
            service["metadata"]["name"],
            f"{service['metadata']['name']}.loragate.svc.cluster.local",
        )
        assert service["spec"]["clusterIP"] == "None"  # headless: one A record per pod
        assert not service["spec"].get("publishNotReadyAddresses", False)
        assert int(port) in {p["port"] for p in service["spec"]["ports"]}
        (engines,) = [
            s
            for s in _named("StatefulSet").values()
            if s["spec"]["serviceName"] == service["metadata"]["name"]
        ]
        args = engines["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--max-cpu-loras") + 1] == str(engine.max_cpu_loras)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_k8s_gateway_replicas_survive_a_node_and_a_rollout(tmp_path: Path) -> None:
    gateway = _named("Deployment")["loragate-gateway"]
    spec, template = gateway["spec"], gateway["spec"]["template"]
    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = template["metadata"]["labels"]
    anti = template["spec"]["affinity"]["podAntiAffinity"]
    terms = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert any(
        t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        and t["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()
        for t in terms
    )
    (pdb,) = _named("PodDisruptionBudget").values()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 1 <= pdb["spec"]["minAvailable"] < spec["replicas"]
    # Drain: readiness fails at once on SIGTERM and is probed often; the pod is given longer
    # than preStop + drain_delay_s + drain_grace_s before SIGKILL.
    (container,) = template["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    probe = container["readinessProbe"]
    assert probe["periodSeconds"] * probe.get("failureThreshold", 3) <= 5
    env = _env(container)
    pre_stop = 0.0  # no preStop hook: the gateway itself keeps serving for drain_delay_s
    assert "preStop" not in container.get("lifecycle", {})
    drain = float(env["LORAGATE_DRAIN_DELAY_S"]) + float(env["LORAGATE_DRAIN_GRACE_S"])
    assert template["spec"]["terminationGracePeriodSeconds"] > pre_stop + drain
    # One store for every replica (the truth for versions, channels and swap locks).
    assert _named("PersistentVolumeClaim")["adapter-store"]["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]
    assert _gateway_settings(tmp_path).placement_policy == "affinity"


def _k8s_prometheus() -> dict[str, Any]:
    text = _named("ConfigMap")["loragate-prometheus"]["data"]["prometheus.yml"]
    config: dict[str, Any] = yaml.safe_load(text)
    return config


def test_k8s_scrape_config_relabels_job_from_the_pod_label() -> None:
    (job,) = _k8s_prometheus()["scrape_configs"]
    relabels = job["relabel_configs"]
    assert any(
        r.get("target_label") == "job"
        and r["source_labels"] == ["__meta_kubernetes_pod_label_loragate_dev_scrape_job"]
        for r in relabels
    )
    for relabel in relabels:
        re.compile(relabel.get("regex", "(.*)"))  # RE2 is stricter; promtool checks it too


# --- promtool (slow: needs `make prometheus`) ------------------------------------------------

promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool not installed: run scripts/install_prometheus.sh",
)


def _promtool(*args: str) -> None:
    done = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
@promtool
def test_promtool_check_rules_and_config() -> None:
    _promtool("check", "rules", str(DEPLOY / "prometheus/alerts.yml"))
    _promtool("check", "config", str(DEPLOY / "prometheus/prometheus.yml"))


@pytest.mark.slow
@promtool
def test_promtool_unit_tests_of_the_alert_thresholds() -> None:
    _promtool("test", "rules", str(DEPLOY / "prometheus/alerts_test.yml"))


@pytest.mark.slow
@promtool
def test_promtool_check_k8s_scrape_config(tmp_path: Path) -> None:
    # Debian's Prometheus is built without Kubernetes service discovery, so the discovery
    # block is swapped for a static target; the relabelling and rule files are checked as is.
    config = _k8s_prometheus()
    config["rule_files"] = [str(DEPLOY / "prometheus/alerts.yml")]
    (job,) = config["scrape_configs"]
    assert job.pop("kubernetes_sd_configs")
    job["static_configs"] = [{"targets": ["127.0.0.1:8000"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    _promtool("check", "config", str(path))
