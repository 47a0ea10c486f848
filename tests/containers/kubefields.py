"""What `podman kube play` (4.3) does with each field of the manifests: played (as written, or
as kube.py translates it), or checked by schema only, and why. kube.render refuses a field this
table does not know, so a new field is decided here before a test claims to run it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Doc = dict[str, Any]

# What is done with each field (a dotted path inside a workload's `spec`, its pod template's
# `spec`, a container, a volume, a Service's `spec`): PLAYED (as written, or as kube.py
# translates it), or why it is checked by schema only.
PLAYED = ""
NO_CONTROLLER = "no controller here: the test plays each pod and its replacement"
ONE_NODE = "one node, no scheduler: nothing to place, spread or reserve"
TMPFS = "podman 4.3 makes every emptyDir a volume on disk: no tmpfs, no size limit"
FIELDS: dict[str, dict[str, str]] = {
    "workload": {
        "replicas": PLAYED, "selector": PLAYED, "template": PLAYED, "serviceName": PLAYED,
        "strategy": NO_CONTROLLER, "updateStrategy": NO_CONTROLLER,
        "podManagementPolicy": NO_CONTROLLER,
    },
    "pod": {
        "containers": PLAYED, "initContainers": PLAYED, "volumes": PLAYED,
        "securityContext": PLAYED, "terminationGracePeriodSeconds": PLAYED,
        "affinity": ONE_NODE, "topologySpreadConstraints": ONE_NODE,
    },
    "container": {
        "name": PLAYED, "image": PLAYED, "imagePullPolicy": PLAYED, "command": PLAYED,
        "args": PLAYED, "env": PLAYED, "envFrom": PLAYED, "ports": PLAYED,
        "startupProbe": PLAYED, "readinessProbe": PLAYED, "livenessProbe": PLAYED,
        "securityContext": PLAYED, "volumeMounts": PLAYED, "resources.limits": PLAYED,
        "resources.requests": ONE_NODE,
    },
    "volume": {
        "name": PLAYED, "configMap": PLAYED, "persistentVolumeClaim": PLAYED,
        "emptyDir.medium": TMPFS, "emptyDir.sizeLimit": TMPFS,
    },
    "Service": {
        "selector": PLAYED, "ports": PLAYED, "clusterIP": PLAYED, "type": PLAYED,
        "publishNotReadyAddresses": "podman names a pod in DNS once it starts, Kubernetes "
        "once it is ready: the gateways' own health checks of each engine cover the gap",
    },
}  # fmt: skip


def schema_only(doc: Doc) -> list[tuple[str, str, str]]:
    """(object, field, why) for every field of `doc` that is not played; raises ValueError
    for a field FIELDS does not know."""
    what = f"{doc['kind']} {doc['metadata']['name']}"
    if doc["kind"] == "Service":
        return _classify(what, "spec", doc["spec"], FIELDS["Service"])
    found = _classify(what, "spec", doc["spec"], FIELDS["workload"])
    pod = doc["spec"]["template"]["spec"]
    found += _classify(what, "spec.template.spec", pod, FIELDS["pod"])
    for volume in pod.get("volumes", []):
        where = f"spec.template.spec.volumes[{volume['name']}]"
        found += _classify(what, where, volume, FIELDS["volume"])
    for kind in ("initContainers", "containers"):
        for c in pod.get(kind, []):
            where = f"spec.template.spec.{kind}[{c['name']}]"
            found += _classify(what, where, c, FIELDS["container"])
    return found


def _classify(
    what: str, path: str, obj: Doc, table: Mapping[str, str]
) -> list[tuple[str, str, str]]:
    """`obj`'s fields (at `path`) against `table`, whose keys are relative to `obj`."""
    found: list[tuple[str, str, str]] = []
    for key, value in obj.items():
        where = f"{path}.{key}".lstrip(".")
        nested = {k.removeprefix(f"{key}."): v for k, v in table.items() if k.startswith(f"{key}.")}
        if key in table:
            if table[key] != PLAYED:
                found.append((what, where, table[key]))
        elif nested and isinstance(value, dict):
            found += _classify(what, where, value, nested)
        else:
            raise ValueError(f"{what}: {where} is not rendered for podman kube play (decide here)")
    return found
