"""The Grafana dashboards and the Prometheus rules, checked without running either:
generated JSON up to date, the structural check (loadtest/dashboards.py), and every metric,
label and legend placeholder they use exists in server/metrics.py or the engine's metrics."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from loadtest import dashboards
from loadtest.sim.config import SimConfig
from loadtest.sim.engine import SimEngine
from loadtest.sim.metrics import build_registry
from server.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
BOARDS = dashboards.load()
ALERTS = yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text())
RULES = [rule for group in ALERTS["groups"] for rule in group["rules"]]
TARGET_LABELS = {"instance", "job"}  # added by Prometheus to every scraped series
_NAME = re.compile(r"(?<![\w:])((?:loragate|vllm)[:_][\w:]*|up)(?![\w:(])")
_SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)\{([^}]*)\}")
_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def catalogue() -> dict[str, set[str]]:
    """Every series name the gateway and the engine export → its labels (as scraped)."""
    names: dict[str, set[str]] = {}
    metrics = Metrics()
    metrics.track_versions(lambda: [("a", "v1", "stable")])
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        labels = set(value._labelnames) | TARGET_LABELS
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
        for suffix in suffixes.get(value._type or "", [""]):
            names[value._name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    for family in [*metrics.registry.collect(), *build_registry(SimEngine(SimConfig())).collect()]:
        for sample in family.samples:
            names.setdefault(sample.name, set(sample.labels) | TARGET_LABELS)
    # vLLM's PrometheusStatLogger labels (the simulated engine only has samples after traffic).
    names["vllm:lora_requests_info"] = {"max_lora", "waiting_lora_adapters",
                                        "running_lora_adapters"} | TARGET_LABELS  # fmt: skip
    names["up"] = set(TARGET_LABELS)
    for rule in RULES:  # recording rules: the labels their expression keeps
        if "record" in rule:
            grouped = _GROUPING.search(rule["expr"])
            assert grouped is not None, rule["record"]
            names[rule["record"]] = {g.strip() for g in grouped.group(1).split(",")}
    return names


CATALOGUE = catalogue()


def _all_exprs() -> list[tuple[str, str, str]]:
    """(where, expr, legend) for every dashboard query and every rule."""
    found = [(q.id, q.expr, "") for board in BOARDS.values() for q in dashboards.queries(board)]
    for board in BOARDS.values():
        for panel in dashboards.panels(board):
            for target in panel.get("targets", []):
                found.append((f"{board['uid']}/{panel['title']}/legend", target["expr"],
                              target.get("legendFormat", "")))  # fmt: skip
    found += [(rule.get("alert") or rule["record"], rule["expr"], "") for rule in RULES]
    return found


EXPRS = _all_exprs()


def test_generated_json_is_up_to_date() -> None:
    check = subprocess.run([sys.executable, str(REPO / "deploy/grafana/generate.py"), "--check"],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_the_three_dashboards_exist() -> None:
    assert set(BOARDS) == {"fleet", "swaps", "releases"}
    uids = [b["uid"] for b in BOARDS.values()]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_dashboard_passes_the_structural_check(name: str) -> None:
    assert dashboards.problems(BOARDS[name]) == []


def _broken(change: str) -> dict[str, Any]:
    board = copy.deepcopy(BOARDS["fleet"])
    panel = next(p for p in board["panels"] if p["type"] == "timeseries")
    if change == "no unit":
        del panel["fieldConfig"]["defaults"]["unit"]
    elif change == "duplicate id":
        panel["id"] = board["panels"][0]["id"]
    elif change == "no datasource":
        panel["datasource"] = None
    elif change == "empty expr":
        panel["targets"][0]["expr"] = " "
    elif change == "overlap":
        panel["gridPos"] = dict(board["panels"][0]["gridPos"])
    elif change == "outside grid":
        panel["gridPos"]["x"] = 20
    elif change == "unknown variable":
        panel["targets"][0]["expr"] += " + on() vector($tenant)"
    elif change == "no title":
        panel["title"] = ""
    return board


@pytest.mark.parametrize(
    ("change", "message"),
    [("no unit", "no unit"), ("duplicate id", "not unique"), ("no datasource", "data source"),
     ("empty expr", "no expr"), ("overlap", "overlaps"), ("outside grid", "outside"),
     ("unknown variable", "undefined variable $tenant"), ("no title", "title missing")],
)  # fmt: skip
def test_structural_check_finds(change: str, message: str) -> None:
    assert any(message in problem for problem in dashboards.problems(_broken(change)))


@pytest.mark.parametrize(("where", "expr", "legend"), EXPRS, ids=[e[0] for e in EXPRS])
def test_metrics_and_labels_exist(where: str, expr: str, legend: str) -> None:
    names = set(_NAME.findall(expr))
    assert names, f"{where}: no metric in {expr}"
    unknown = names - set(CATALOGUE)
    assert not unknown, f"{where}: unknown metrics {unknown}"
    for metric, matchers in _SELECTOR.findall(expr):
        if metric in CATALOGUE:
            labels = set(_MATCHER.findall(matchers))
            assert labels <= CATALOGUE[metric], (
                f"{where}: {metric} has no {labels - CATALOGUE[metric]}"
            )
    known = set().union(*(CATALOGUE[n] for n in names)) | {"channel"}  # channel: from joins
    for grouping in _GROUPING.findall(expr):
        used = {g.strip() for g in grouping.split(",") if g.strip()}
        assert used <= known, f"{where}: grouping by unknown labels {used - known}"
    placeholders = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    assert placeholders <= known, f"{where}: legend uses {placeholders - known}"


def test_every_alert_has_summary_description_severity_and_a_unit() -> None:
    alerts = [rule for rule in RULES if "alert" in rule]
    assert len(alerts) >= 10
    for rule in alerts:
        annotations = rule.get("annotations", {})
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}, rule["alert"]
        # The description states the threshold with its unit (or a plain count / percentage).
        text = annotations["description"]
        assert re.search(r"threshold|target", text), rule["alert"]
        assert re.search(r"\d+(\.\d+)?\s*(s\b|ms|%|minutes?|per minute|requests/s)|any|== 0",
                         text), rule["alert"]  # fmt: skip


def test_expand_replaces_grafana_variables() -> None:
    expr = 'rate(x{adapter=~"$adapter", engine=~"${engine}"}[$__rate_interval]) [[adapter]]'
    assert dashboards.expand(expr, {"engine": "engine-0"}, rate_interval="30s") == (
        'rate(x{adapter=~".*", engine=~"engine-0"}[30s]) .*'
    )
    assert dashboards.variables_used(expr) == {"adapter", "engine", "__rate_interval"}
