"""deploy/k8s rendered for `podman kube play` (podman 4.3) and probed; kubeplay.py plays it.

`kubectl apply -k deploy/k8s` applies the kustomization's resources with its image names. This
module renders the same documents so that podman runs them as a cluster would, and every change
is listed here; the rest is played as written: args, env, ConfigMap and claim volumes and their
mounts, emptyDirs, the pod's user and group, read-only root filesystem, dropped capabilities,
no privilege escalation, memory limits. Every field of a workload, its pod, its containers and
volumes, and of a Service is in kubefields.FIELDS: played, or schema only and why; a field in
none is refused.

- replicas: podman plays one pod per Deployment, so replica i of workload `name` becomes a
  one-replica Deployment `<prefix>-<name>-<i>`, its pod `<prefix>-<name>-<i>-pod-0`. A
  StatefulSet's pod keeps its Kubernetes name as its hostname, `<name>-<i>`.
- Service: podman has none. A Service becomes DNS names (network aliases, aardvark-dns) of the
  pods it selects, on the run's own network: `svc`, `svc.ns`, `svc.ns.svc`,
  `svc.ns.svc.cluster.local`. Several pods under one name answer with one A record each (seen
  with aardvark-dns 1.4: getaddrinfo gets every address, and a stopped pod's is gone), which
  is what a headless Service is; a headless Service also names each pod of its StatefulSet
  `<pod>.<svc>` and so on. A ClusterIP Service's one virtual IP is not rendered: its clients
  (the tests) balance over the pods' addresses themselves. An alias cannot remap ports, so a
  Service whose port differs from its target is refused. Kubernetes lists a pod in DNS once
  it is ready (publishNotReadyAddresses: false); podman once it starts.
- Namespace: podman has none, and its volumes and pods are host-wide: every name podman makes
  host-wide (ConfigMap and claim volumes, emptyDirs, pods) gets the run's prefix instead.
- emptyDir: podman 4.3 makes one volume per emptyDir *name*, shared by every pod using that
  name (Kubernetes: one per pod): renamed per pod. It is a directory on disk whatever its
  medium and sizeLimit say (schema only).
- ports: podman 4.3 publishes every containerPort on the host's 0.0.0.0 (Kubernetes never does,
  and two replicas collide): dropped; pods are reached at their address on the network, at
  the ports the manifests declare (`Pod.containers` keeps them).
- probes: podman 4.3 turns a livenessProbe into a `curl` healthcheck (there is no curl in the
  images) and cannot resolve named ports (it probes port 0); readiness and startup probes it
  ignores. Dropped from what is played, and run by the tests as the kubelet runs them
  (`probe_urls`, from the manifests' own probes and ports).
- terminationGracePeriodSeconds: podman 4.3 keeps its own stop timeout (10 s); `Pod.grace_s`
  carries it to `KubePlay.delete`, which waits that long before SIGKILL, as the kubelet does.
- images: the kustomization's `images` are applied, then loragate-gateway becomes the local
  gateway image and loragate-engine (vLLM) the simulated engine image, its vLLM arguments
  translated (tests/containers/sim.py).
- PersistentVolumeClaim: played (podman makes a volume); the test fills it before any pod
  starts, as an operator fills the ReadWriteMany store. Otherwise podman would copy the image's
  /srv/adapters into the empty volume, which Kubernetes never does.
- fsGroup: podman ignores it. A claim that pods with fsGroup G mount read-write is made owned
  by G (podman's volume.podman.io/uid and gid annotations): the volume is then the writers',
  as fsGroup's group ownership makes it in Kubernetes.
- Not played: PodDisruptionBudget (no eviction API), ConfigMaps no pod uses (the Prometheus
  scrape config: no Prometheus here), and the fields kubefields.FIELDS marks schema only
  (one node, no scheduler, no controllers). `Plan.not_played` and `Plan.schema_only` list
  what a run skipped; tests/unit/test_deploy.py checks them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.containers.kubefields import schema_only
from tests.containers.podman import GATEWAY_IMAGE, SIM_IMAGE
from tests.containers.sim import sim_args

Doc = dict[str, Any]
WORKLOADS = ("Deployment", "StatefulSet")
NOT_PLAYED = {
    "PodDisruptionBudget": "no eviction API here: schema only",
}
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
DEFAULT_GRACE_S = 30  # Kubernetes' terminationGracePeriodSeconds when a pod sets none


@dataclass(frozen=True)
class Pod:
    """One pod to play: a one-replica Deployment and the ConfigMaps it uses."""

    workload: str  # the Deployment or StatefulSet in the manifests
    replica: int
    name: str  # podman's pod name
    documents: tuple[Doc, ...]
    aliases: tuple[str, ...]  # its DNS names on the network (the Services that select it)
    containers: tuple[Doc, ...]  # the containers as the manifests declare them
    annotations: Mapping[str, str]  # the pod template's, as the manifests declare them
    grace_s: int  # terminationGracePeriodSeconds

    @property
    def k8s_name(self) -> str:
        """Its name in Kubernetes (a StatefulSet's `vllm-0`; a Deployment's pod has a random
        suffix there, the replica number here)."""
        return f"{self.workload}-{self.replica}"

    def yaml(self) -> str:
        return yaml.safe_dump_all(self.documents, sort_keys=False)

    def port(self, name: str) -> int:
        """The containerPort called `name` (KeyError: none)."""
        ports = {p.get("name"): p["containerPort"] for c in self.containers
                 for p in c.get("ports", [])}  # fmt: skip
        port: int = ports[name]
        return port


@dataclass
class Plan:
    prefix: str
    claims: list[Doc] = field(default_factory=list)  # PersistentVolumeClaims, renamed
    pods: list[Pod] = field(default_factory=list)
    not_played: list[tuple[str, str, str]] = field(default_factory=list)  # kind, name, why
    schema_only: list[tuple[str, str, str]] = field(default_factory=list)  # object, field, why

    def pods_of(self, workload: str) -> list[Pod]:
        return [pod for pod in self.pods if pod.workload == workload]

    def volume(self, claim: str) -> str:
        """podman's volume for a claim of the manifests."""
        return f"{self.prefix}-{claim}"


# --- loading ---------------------------------------------------------------------------------


KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "images"}


def load(directory: Path) -> list[Doc]:
    """The documents `kubectl apply -k directory` applies, with the kustomization's images.
    Raises ValueError for kustomization fields not applied here (patches, namespace, ...)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    if set(kustomization) - KUSTOMIZATION_FIELDS:
        unknown = sorted(set(kustomization) - KUSTOMIZATION_FIELDS)
        raise ValueError(f"kustomization fields not applied by tests/containers/kube.py: {unknown}")
    docs = [
        doc
        for resource in kustomization["resources"]
        for doc in yaml.safe_load_all((directory / resource).read_text())
        if doc
    ]
    for container in containers(docs):
        container["image"] = _kustomized(container["image"], kustomization.get("images", []))
    return docs


def _kustomized(image: str, rules: Sequence[Doc]) -> str:
    name, _, tag = image.partition(":")
    for rule in rules:
        if rule["name"] == name:
            return f"{rule.get('newName', name)}:{rule.get('newTag', tag)}"
    return image


def containers(docs: Sequence[Doc]) -> Iterator[Doc]:
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            spec = doc["spec"]["template"]["spec"]
            yield from spec.get("initContainers", [])
            yield from spec["containers"]


# --- rendering -------------------------------------------------------------------------------


def render(
    docs: Sequence[Doc],
    prefix: str,
    replicas: Mapping[str, int] | None = None,
    sim_extra: Sequence[str] = (),
) -> Plan:
    """What to play for `docs`: `replicas` overrides a workload's count, `sim_extra` is added to
    the simulated engine's arguments. Raises ValueError for a kind or field not rendered."""
    plan = Plan(prefix)
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    services = [d for d in docs if d["kind"] == "Service"]
    used: set[str] = set()
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind in WORKLOADS or kind == "Service":
            plan.schema_only += schema_only(doc)
        if kind in WORKLOADS:
            count = (replicas or {}).get(name, doc["spec"].get("replicas", 1))
            for i in range(count):
                pod = _pod(doc, i, prefix, services, config_maps, sim_extra)
                used |= {d["metadata"]["name"] for d in pod.documents[1:]}
                plan.pods.append(pod)
        elif kind == "PersistentVolumeClaim":
            claim = copy.deepcopy(doc)
            claim["metadata"] = {"name": plan.volume(name)}
            owner = _writers_fs_group(docs, name)
            if owner is not None:
                ids = {"volume.podman.io/uid": str(owner), "volume.podman.io/gid": str(owner)}
                claim["metadata"]["annotations"] = ids
            plan.claims.append(claim)
        elif kind in NOT_PLAYED:
            plan.not_played.append((kind, name, NOT_PLAYED[kind]))
        elif kind not in {"Namespace", "Service", "ConfigMap"}:
            raise ValueError(f"{kind} {name}: not rendered for podman kube play (decide here)")
    for name in sorted(set(config_maps) - {n.removeprefix(f"{prefix}-") for n in used}):
        plan.not_played.append(("ConfigMap", name, "no pod uses it"))
    return plan


def _writers_fs_group(docs: Sequence[Doc], claim: str) -> int | None:
    """The fsGroup of the pods that mount `claim` read-write (None: no such pod); raises
    ValueError when they disagree."""
    groups: set[int] = set()
    for doc in docs:
        if doc["kind"] not in WORKLOADS:
            continue
        spec = doc["spec"]["template"]["spec"]
        for volume in spec.get("volumes", []):
            source = volume.get("persistentVolumeClaim", {})
            if source.get("claimName") != claim or source.get("readOnly"):
                continue
            mounts = [m for c in spec["containers"] for m in c.get("volumeMounts", [])
                      if m["name"] == volume["name"]]  # fmt: skip
            fs_group = spec.get("securityContext", {}).get("fsGroup")
            if fs_group is not None and any(not m.get("readOnly") for m in mounts):
                groups.add(fs_group)
    if len(groups) > 1:
        raise ValueError(f"claim {claim}: writers with fsGroups {sorted(groups)}")
    return groups.pop() if groups else None


def _pod(
    doc: Doc,
    replica: int,
    prefix: str,
    services: Sequence[Doc],
    config_maps: Mapping[str, Doc],
    sim_extra: Sequence[str],
) -> Pod:
    name, namespace = doc["metadata"]["name"], doc["metadata"].get("namespace", "default")
    stateful = doc["kind"] == "StatefulSet"
    k8s_pod = f"{name}-{replica}"
    deployment = f"{prefix}-{k8s_pod}"
    template = copy.deepcopy(doc["spec"]["template"])
    spec = template["spec"]
    original = tuple(copy.deepcopy(spec["containers"]))
    aliases = _aliases(services, template, namespace, k8s_pod,
                       doc["spec"].get("serviceName") if stateful else None)  # fmt: skip
    if stateful:
        spec["hostname"] = k8s_pod  # Kubernetes names a StatefulSet's pod's host after it
    grace_s = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_S)
    refs = _rename_volumes(spec, prefix, deployment)
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        refs |= _render_container(container, prefix, sim_extra)
    documents: list[Doc] = [{
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": deployment, "labels": dict(template["metadata"].get("labels", {}))},
        "spec": {"replicas": 1, "selector": doc["spec"]["selector"], "template": template},
    }]  # fmt: skip
    for ref in sorted(refs):
        if ref not in config_maps:
            raise ValueError(f"{name}: ConfigMap {ref} is not in the manifests")
        config_map = copy.deepcopy(config_maps[ref])
        config_map["metadata"] = {"name": f"{prefix}-{ref}"}
        documents.append(config_map)
    annotations = dict(doc["spec"]["template"]["metadata"].get("annotations", {}))
    return Pod(name, replica, f"{deployment}-pod-0", tuple(documents), tuple(aliases), original,
               annotations, grace_s)  # fmt: skip


def _aliases(
    services: Sequence[Doc], template: Doc, namespace: str, pod: str, subdomain: str | None
) -> list[str]:
    labels = template["metadata"].get("labels", {})
    ports = {p.get("name"): p["containerPort"] for c in template["spec"]["containers"]
             for p in c.get("ports", [])}  # fmt: skip
    aliases: list[str] = []
    for service in services:
        selector = service["spec"].get("selector") or {}
        if not selector or not selector.items() <= labels.items():
            continue
        svc, ns = service["metadata"]["name"], service["metadata"].get("namespace", namespace)
        if service["spec"].get("type", "ClusterIP") != "ClusterIP":
            raise ValueError(f"Service {svc}: type {service['spec']['type']} is not rendered")
        for port in service["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            if ports.get(target, target) != port["port"]:
                raise ValueError(f"Service {svc}: port {port['port']} -> {target} is a remap")
        names = [svc, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local"]
        aliases += names
        if service["spec"].get("clusterIP") == "None" and subdomain == svc:
            aliases += [f"{pod}.{n}" for n in names]
    return aliases


def _rename_volumes(spec: Doc, prefix: str, deployment: str) -> set[str]:
    """Prefix host-wide volume names; returns the ConfigMaps the volumes use."""
    config_maps: set[str] = set()
    renamed: dict[str, str] = {}
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            config_maps.add(volume["configMap"]["name"])
            volume["configMap"]["name"] = f"{prefix}-{volume['configMap']['name']}"
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]
            claim["claimName"] = f"{prefix}-{claim['claimName']}"
        if "emptyDir" in volume:
            renamed[volume["name"]] = f"{deployment}-{volume['name']}"
            volume["name"] = renamed[volume["name"]]
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        for mount in container.get("volumeMounts", []):
            mount["name"] = renamed.get(mount["name"], mount["name"])
    return config_maps


def _render_container(container: Doc, prefix: str, sim_extra: Sequence[str]) -> set[str]:
    """Swap the image, drop ports and probes, prefix env references; returns the ConfigMaps
    its environment uses."""
    image = container["image"].partition(":")[0]
    if image == "loragate-gateway":
        container["image"] = GATEWAY_IMAGE
    elif image == "loragate-engine":
        container["image"] = SIM_IMAGE
        # The image's entrypoint runs the engine; words of a command that are not flags drop out.
        vllm = [*container.pop("command", []), *container.get("args", [])]
        container["args"] = sim_args(vllm, sim_extra)
    else:
        raise ValueError(f"container {container['name']}: no local image for {image}")
    container.pop("ports", None)
    for probe in PROBES:
        container.pop(probe, None)
    config_maps: set[str] = set()
    for env in container.get("env", []):
        ref = env.get("valueFrom", {})
        for key in ("configMapKeyRef", "secretKeyRef"):
            if key in ref:
                if key == "configMapKeyRef":
                    config_maps.add(ref[key]["name"])
                ref[key]["name"] = f"{prefix}-{ref[key]['name']}"
    for source in container.get("envFrom", []):
        for key in ("configMapRef", "secretRef"):
            if key in source:
                if key == "configMapRef":
                    config_maps.add(source[key]["name"])
                source[key]["name"] = f"{prefix}-{source[key]['name']}"
    return config_maps


# --- probes ----------------------------------------------------------------------------------


def probe_urls(pod: Pod, address: str) -> list[tuple[str, str, str]]:
    """(container, probe, url) for every probe the manifests declare, as the kubelet runs
    them against the pod at `address`. Raises ValueError for probes other than httpGet."""
    urls = []
    for container in pod.containers:
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
        for kind in PROBES:
            probe = container.get(kind)
            if probe is None:
                continue
            if "httpGet" not in probe:
                raise ValueError(f"{container['name']}: {kind} is not httpGet")
            get = probe["httpGet"]
            port = ports.get(get["port"], get["port"])
            scheme = get.get("scheme", "HTTP").lower()
            urls.append((container["name"], kind, f"{scheme}://{address}:{port}{get['path']}"))
    return urls


def scrape_url(pod: Pod, address: str) -> str | None:
    """Where a Prometheus with deploy/k8s/prometheus-scrape.yaml's relabelling scrapes `pod`
    (its prometheus.io/* annotations), or None when it is not scraped."""
    if pod.annotations.get("prometheus.io/scrape") != "true":
        return None
    port = pod.annotations["prometheus.io/port"]
    return f"http://{address}:{port}{pod.annotations.get('prometheus.io/path', '/metrics')}"
