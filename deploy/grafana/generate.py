"""Generate loragate's Grafana dashboards (deploy/grafana/dashboards/*.json).

    python deploy/grafana/generate.py            # rewrite the JSON files
    python deploy/grafana/generate.py --check    # exit 1 if a committed file is out of date

The JSON files are committed (Grafana's file provisioning reads them as they are); this module
is the source. A test runs `--check`, so an edit here without regenerating fails the suite.
Standard library only. Every panel queries the provisioned Prometheus data source (uid
`loragate-prometheus`); `$adapter` / `$engine` are multi-value variables whose "All" is `.*`;
rate windows are Grafana's `$__rate_interval`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "loragate-prometheus"}
RATE = "$__rate_interval"
GRID_WIDTH = 24  # Grafana's grid is 24 columns wide

Json = dict[str, Any]


# --- building blocks -------------------------------------------------------------------------


@dataclass
class Target:
    expr: str
    legend: str = ""
    instant: bool = False
    fmt: str = "time_series"  # or "heatmap", "table"

    def to_json(self, ref_id: str) -> Json:
        return {
            "refId": ref_id,
            "datasource": DATASOURCE,
            "expr": self.expr,
            "legendFormat": self.legend or "__auto",
            "range": not self.instant,
            "instant": self.instant,
            "format": self.fmt,
            "editorMode": "code",
        }


@dataclass
class Panel:
    title: str
    targets: list[Target]
    unit: str
    kind: str = "timeseries"  # timeseries, stat, heatmap, table
    width: int = 12
    height: int = 8
    description: str = ""
    stack: bool = False
    thresholds: list[tuple[float, str]] = field(default_factory=list)
    minimum: float | None = None
    maximum: float | None = None

    def to_json(self, panel_id: int, x: int, y: int) -> Json:
        body: Json = {
            "id": panel_id,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "datasource": DATASOURCE,
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "targets": [t.to_json(chr(ord("A") + i)) for i, t in enumerate(self.targets)],
            "fieldConfig": {"defaults": self._defaults(), "overrides": []},
            "options": self._options(),
        }
        if self.kind == "heatmap":
            body["maxDataPoints"] = 60
        if self.kind == "table":
            # Label columns only: the value is 1 (info metrics) or vLLM's update timestamp.
            hidden = {"Time": True, "Value": True, "__name__": True}
            body["transformations"] = [{"id": "organize", "options": {"excludeByName": hidden}}]
        return body

    def _defaults(self) -> Json:
        steps: list[Json] = [{"color": "green", "value": None}]
        steps += [{"color": color, "value": value} for value, color in self.thresholds]
        defaults: Json = {
            "unit": self.unit,
            "thresholds": {"mode": "absolute", "steps": steps},
            "color": {"mode": "thresholds" if self.kind == "stat" else "palette-classic"},
        }
        if self.minimum is not None:
            defaults["min"] = self.minimum
        if self.maximum is not None:
            defaults["max"] = self.maximum
        if self.kind == "timeseries":
            defaults["custom"] = {
                "drawStyle": "line",
                "lineWidth": 1,
                "fillOpacity": 20 if self.stack else 0,
                "showPoints": "never",
                "spanNulls": False,
                "stacking": {"mode": "normal" if self.stack else "none", "group": "A"},
                "thresholdsStyle": {"mode": "line" if self.thresholds else "off"},
            }
        return defaults

    def _options(self) -> Json:
        if self.kind == "stat":
            return {
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "value",
                "graphMode": "area",
                "textMode": "auto",
                "justifyMode": "auto",
                "orientation": "auto",
            }
        if self.kind == "heatmap":
            return {
                "calculate": False,
                "cellGap": 1,
                "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
                "yAxis": {"unit": self.unit, "axisPlacement": "left"},
                "rowsFrame": {"layout": "le"},
                "tooltip": {"mode": "single", "yHistogram": True},
                "legend": {"show": True},
            }
        if self.kind == "table":
            return {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
        return {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }


@dataclass
class Row:
    title: str


def quantiles(metric: str, by: str, selector: str, qs: tuple[float, ...]) -> list[Target]:
    """p50/p95/p99 of a histogram, one series per `by` label."""
    return [
        Target(
            f"histogram_quantile({q}, sum by ({by}, le) "
            f"(rate({metric}_bucket{{{selector}}}[{RATE}])))",
            f"p{round(q * 100)} {{{{{by}}}}}",
        )
        for q in qs
    ]


def variable(name: str, label: str, query: str) -> Json:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,  # on time range change
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def annotation(name: str, expr: str, color: str, title: str) -> Json:
    return {
        "name": name,
        "datasource": DATASOURCE,
        "enable": True,
        "iconColor": color,
        "expr": expr,
        "step": "30s",
        "titleFormat": title,
        "tagKeys": "adapter",
        "textFormat": "",
        "useValueForTime": False,
    }


BUILTIN_ANNOTATION: Json = {
    "builtIn": 1,
    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
    "enable": True,
    "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)",
    "name": "Annotations & Alerts",
    "type": "dashboard",
}


def dashboard(
    uid: str,
    title: str,
    description: str,
    items: list[Panel | Row],
    variables: list[Json],
    annotations: list[Json] | None = None,
) -> Json:
    panels: list[Json] = []
    x = y = row_height = 0
    for panel_id, item in enumerate(items, start=1):
        if isinstance(item, Row):
            y += row_height
            x = row_height = 0
            panels.append({
                "id": panel_id, "type": "row", "title": item.title, "collapsed": False,
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y}, "panels": [],
            })  # fmt: skip
            y += 1
            continue
        if x + item.width > GRID_WIDTH:
            y += row_height
            x = row_height = 0
        panels.append(item.to_json(panel_id, x, y))
        x += item.width
        row_height = max(row_height, item.height)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["loragate"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": [BUILTIN_ANNOTATION, *(annotations or [])]},
        "links": [
            {"title": "loragate", "type": "dashboards", "tags": ["loragate"], "asDropdown": False}
        ],
        "panels": panels,
    }


# --- the dashboards --------------------------------------------------------------------------

ADAPTER = 'adapter=~"$adapter"'
ENGINE = 'engine=~"$engine"'
REQS = f"loragate_requests_total{{{ADAPTER}}}"
ERRS = f'loragate_requests_total{{{ADAPTER}, code=~"5.."}}'
QS = (0.5, 0.95, 0.99)


def fleet() -> Json:
    items: list[Panel | Row] = [
        Panel(
            "Requests/s",
            [Target(f"sum(rate({REQS}[{RATE}]))", "requests/s")],
            "reqps",
            "stat",
            6,
            4,
            "Requests answered per second, all adapters selected.",
        ),
        Panel(
            "5xx ratio",
            [Target(f"sum(rate({ERRS}[{RATE}])) / sum(rate({REQS}[{RATE}]))", "5xx")],
            "percentunit",
            "stat",
            6,
            4,
            "Fraction of requests answered 5xx.",
            thresholds=[(0.01, "orange"), (0.05, "red")],
        ),
        Panel(
            "p99 latency",
            [
                Target(
                    "histogram_quantile(0.99, sum by (le) "
                    f"(rate(loragate_request_duration_seconds_bucket{{{ADAPTER}}}[{RATE}])))",
                    "p99",
                )
            ],
            "s",
            "stat",
            6,
            4,
            "99th percentile of request duration, request to last byte (alert: over 10 s).",
            thresholds=[(5.0, "orange"), (10.0, "red")],
        ),
        Panel(
            "Engines up",
            [
                Target("sum(loragate_engine_up)", "up"),
                Target("count(loragate_engine_up)", "configured"),
            ],
            "short",
            "stat",
            6,
            4,
            "Engines answering the gateway's health check, of those configured.",
        ),
        Row("Traffic"),
        Panel(
            "Requests/s by adapter",
            [Target(f"sum by (adapter) (rate({REQS}[{RATE}]))", "{{adapter}}")],
            "reqps",
            stack=True,
            description="Requests answered per second, by adapter (the base model as its id).",
        ),
        Panel(
            "Requests/s by status",
            [Target(f"sum by (code) (rate({REQS}[{RATE}]))", "{{code}}")],
            "reqps",
            stack=True,
            description="Requests answered per second, by HTTP status.",
        ),
        Panel(
            "5xx ratio by adapter",
            [
                Target(
                    f"sum by (adapter) (rate({ERRS}[{RATE}])) "
                    f"/ sum by (adapter) (rate({REQS}[{RATE}]))",
                    "{{adapter}}",
                )
            ],
            "percentunit",
            minimum=0,
            thresholds=[(0.05, "red")],
            description="Fraction of each adapter's requests answered 5xx (alert: over 5 % "
            "for 5 min).",
        ),
        Panel(
            "Tokens/s by adapter",
            [
                Target(
                    f"sum by (adapter, kind) (rate(loragate_tokens_total{{{ADAPTER}}}[{RATE}]))",
                    "{{adapter}} {{kind}}",
                )
            ],
            "suffix: tok/s",
            stack=True,
            description="Prompt and completion tokens per second, from the engines' usage.",
        ),
        Row("Latency"),
        Panel(
            "Request latency by adapter",
            quantiles("loragate_request_duration_seconds", "adapter", ADAPTER, QS),
            "s",
            description="p50/p95/p99 of request duration (request to last byte), by adapter.",
            thresholds=[(10.0, "red")],
        ),
        Panel(
            "Time to first token by adapter",
            quantiles("loragate_time_to_first_token_seconds", "adapter", ADAPTER, QS),
            "s",
            description="p50/p95/p99 of time to the first streamed byte (streaming requests), "
            "by adapter; adapter loads land here.",
            thresholds=[(2.0, "red")],
        ),
        Panel(
            "Gateway overhead",
            [
                Target(
                    f"histogram_quantile({q}, sum by (le) "
                    f"(rate(loragate_gateway_overhead_seconds_bucket[{RATE}])))",
                    f"p{round(q * 100)}",
                )
                for q in QS
            ],
            "s",
            thresholds=[(0.05, "red")],
            description="Time spent in the gateway itself, excluding adapter loads and "
            "generation (alert: p99 over 50 ms).",
        ),
        Panel(
            "In-flight requests by engine",
            [Target("sum by (engine) (loragate_inflight_requests)", "{{engine}}")],
            "short",
            description="Requests the gateway has in flight to each engine.",
        ),
        Row("Engines (vLLM's own metrics)"),
        Panel(
            "Engine health",
            [
                Target("loragate_engine_up", "gateway check {{engine}}"),
                Target('up{job="vllm"}', "scrape {{instance}}"),
            ],
            "short",
            width=8,
            minimum=0,
            maximum=1,
            description="1 = healthy: the gateway's /health check per engine, and "
            "Prometheus's scrape of each engine.",
        ),
        Panel(
            "vLLM requests running",
            [Target("sum by (instance) (vllm:num_requests_running)", "{{instance}}")],
            "short",
            width=8,
            description="vllm:num_requests_running: requests in the engine's batches.",
        ),
        Panel(
            "vLLM requests waiting",
            [Target("sum by (instance) (vllm:num_requests_waiting)", "{{instance}}")],
            "short",
            width=8,
            description="vllm:num_requests_waiting: requests queued in the engine.",
        ),
        Panel(
            "Engine restarts",
            [Target("sum by (engine) (loragate_engine_restarts_total)", "{{engine}}")],
            "short",
            width=24,
            height=6,
            description="Managed engine processes that exited and were "
            "restarted, since the gateway started (alert: more than 2 in 15 min).",
        ),
    ]
    return dashboard(
        "loragate-fleet", "loragate / Fleet overview",
        "Traffic, errors, latency and tokens per adapter; gateway overhead; engine health.",
        items, [variable("adapter", "Adapter", "label_values(loragate_requests_total, adapter)")],
    )  # fmt: skip


def swaps() -> Json:
    lookups = "loragate_registry_lookups_total"
    items: list[Panel | Row] = [
        Panel(
            "Swap/request ratio",
            [Target("max(loragate_swap_request_ratio)", "ratio")],
            "percentunit",
            "stat",
            6,
            4,
            "Adapter loads per adapter request over the "
            "gateway's sliding window (alert: over 30 % for 10 min).",
            thresholds=[(0.1, "orange"), (0.3, "red")],
        ),
        Panel(
            "Residency hit ratio",
            [
                Target(
                    f'sum(rate({lookups}{{{ENGINE}, result="hit"}}[{RATE}])) '
                    f"/ sum(rate({lookups}{{{ENGINE}}}[{RATE}]))",
                    "hits",
                )
            ],
            "percentunit",
            "stat",
            6,
            4,
            "Adapter requests whose version was already resident.",
        ),
        Panel(
            "Thrash reloads/min",
            [Target(f"sum(rate(loragate_adapter_thrash_total[{RATE}])) * 60", "reloads/min")],
            "short",
            "stat",
            6,
            4,
            "Versions reloaded within thrash_window_s of their eviction, "
            "per minute (alert: over 2/min for one adapter, 5 min).",
            thresholds=[(1.0, "orange"), (2.0, "red")],
        ),
        Panel(
            "Load p95",
            [
                Target(
                    "histogram_quantile(0.95, sum by (le) "
                    f"(rate(loragate_adapter_load_seconds_bucket{{{ENGINE}}}[{RATE}])))",
                    "p95",
                )
            ],
            "s",
            "stat",
            6,
            4,
            "95th percentile of the engine's adapter load call.",
        ),
        Row("Adapter loads"),
        Panel(
            "Load latency heatmap",
            [
                Target(
                    "sum by (le) "
                    f"(increase(loragate_adapter_load_seconds_bucket{{{ENGINE}}}[{RATE}]))",
                    "{{le}}",
                    fmt="heatmap",
                )
            ],
            "s",
            "heatmap",
            description="Adapter load durations (the engine's load call), per histogram bucket.",
        ),
        Panel(
            "Load latency by engine",
            quantiles("loragate_adapter_load_seconds", "engine", ENGINE, QS),
            "s",
            description="p50/p95/p99 of the engine's adapter load call, by engine.",
        ),
        Panel(
            "Loads, evictions, thrash per second",
            [
                Target(
                    f"sum by (engine) (rate(loragate_adapter_loads_total{{{ENGINE}}}[{RATE}]))",
                    "loads {{engine}}",
                ),
                Target(
                    f"sum by (engine) (rate(loragate_adapter_evictions_total{{{ENGINE}}}[{RATE}]))",
                    "evictions {{engine}}",
                ),
                Target(
                    f"sum by (adapter) (rate(loragate_adapter_thrash_total[{RATE}]))",
                    "thrash {{adapter}}",
                ),
                Target(
                    f"sum by (engine) (rate(loragate_load_wait_seconds_count{{{ENGINE}}}[{RATE}]))",
                    "load waits {{engine}}",
                ),
            ],
            "ops",
            description="Adapter loads and evictions per engine; thrash reloads per "
            "adapter (a reload within thrash_window_s of the eviction); requests that had to "
            "wait for a load, per engine.",
        ),
        Panel(
            "Loads and load failures by adapter",
            [
                Target(
                    f"sum by (adapter) (rate(loragate_adapter_loads_total{{{ENGINE}}}[{RATE}]))",
                    "loads {{adapter}}",
                ),
                Target(
                    "sum by (adapter) "
                    f"(rate(loragate_adapter_load_failures_total{{{ENGINE}}}[{RATE}]))",
                    "failures {{adapter}}",
                ),
            ],
            "ops",
            description="Which adapters are being swapped in, and which fail to load "
            "(alert: any failure in 10 min).",
        ),
        Row("Residency"),
        Panel(
            "Residency hit ratio by engine",
            [
                Target(
                    f'sum by (engine) (rate({lookups}{{{ENGINE}, result="hit"}}[{RATE}])) '
                    f"/ sum by (engine) (rate({lookups}{{{ENGINE}}}[{RATE}]))",
                    "{{engine}}",
                )
            ],
            "percentunit",
            minimum=0,
            maximum=1,
            description="Fraction of adapter requests that found their version resident.",
        ),
        Panel(
            "Resident adapters vs slots",
            [
                Target(
                    f"sum by (engine) (loragate_resident_adapters{{{ENGINE}}})",
                    "resident {{engine}}",
                ),
                Target(f"sum by (engine) (loragate_adapter_slots{{{ENGINE}}})", "slots {{engine}}"),
            ],
            "short",
            minimum=0,
            description="Adapter versions loaded on each engine, against "
            "the slots the registry manages there (max_cpu_loras).",
        ),
        Panel(
            "Load wait time",
            quantiles("loragate_load_wait_seconds", "engine", ENGINE, QS),
            "s",
            description="How long requests that missed waited for their adapter to "
            "become resident (p50/p95/p99): their share of a load, or a wait for a free slot.",
        ),
        Panel(
            "Swap/request ratio by gateway",
            [Target("loragate_swap_request_ratio", "{{instance}}")],
            "percentunit",
            minimum=0,
            thresholds=[(0.3, "red")],
            description="Adapter loads per adapter request over "
            "each gateway's sliding window (swap_ratio_window_s).",
        ),
        Row("Engines (vLLM's own metrics)"),
        Panel(
            "vLLM LoRA requests",
            [Target("topk by (instance) (1, vllm:lora_requests_info)", instant=True, fmt="table")],
            "short",
            "table",
            12,
            6,
            "vllm:lora_requests_info, latest per engine: max_lora and "
            "the adapters with running / waiting requests.",
        ),
        Panel(
            "vLLM requests running and waiting",
            [
                Target("sum by (instance) (vllm:num_requests_running)", "running {{instance}}"),
                Target("sum by (instance) (vllm:num_requests_waiting)", "waiting {{instance}}"),
            ],
            "short",
            height=6,
            description="vllm:num_requests_running / _waiting per engine: "
            "adapter loads pause decoding, so swaps show up as waiting requests.",
        ),
    ]
    return dashboard(
        "loragate-swaps", "loragate / Swaps and thrashing",
        "Adapter residency on the engines: loads, evictions, thrashing, hit ratio, load waits.",
        items, [variable("engine", "Engine", "label_values(loragate_adapter_slots, engine)")],
    )  # fmt: skip


def _by_channel(inner: str, channels: str = "stable|canary") -> str:
    """`inner` (by adapter, version) labelled with the release channel pointing at it."""
    return (
        f"{inner} * on (adapter, version) group_left (channel) max by (adapter, version, channel) "
        f'(loragate_active_version_info{{{ADAPTER}, channel=~"{channels}"}})'
    )


def releases() -> Json:
    reqs = f"sum by (adapter, version) (rate(loragate_requests_total{{{ADAPTER}}}[{RATE}]))"
    errs = f"sum by (adapter, version) (rate({ERRS}[{RATE}]))"
    ratio = f"(({errs}) or ({reqs}) * 0) / ({reqs})"
    p95 = ("histogram_quantile(0.95, sum by (adapter, version, le) "
           f"(rate(loragate_request_duration_seconds_bucket{{{ADAPTER}}}[{RATE}])))")  # fmt: skip
    items: list[Panel | Row] = [
        Panel(
            "Active versions",
            [
                Target(
                    "max by (adapter, channel, version) "
                    f"(loragate_active_version_info{{{ADAPTER}}})",
                    instant=True,
                    fmt="table",
                )
            ],
            "short",
            "table",
            12,
            7,
            "The version each release channel (stable, previous, canary) points at now.",
        ),
        Panel(
            "Requests/s by version",
            [
                Target(
                    "sum by (adapter, version) "
                    f'(rate(loragate_requests_total{{{ADAPTER}, version!=""}}[{RATE}]))',
                    "{{adapter}}@{{version}}",
                )
            ],
            "reqps",
            height=7,
            stack=True,
            description="Requests answered per second by exact version (stable, canary, "
            "pinned name@version).",
        ),
        Row("Canary vs stable"),
        Panel(
            "5xx ratio: canary vs stable",
            [Target(_by_channel(f"({ratio})"), "{{adapter}} {{channel}} ({{version}})")],
            "percentunit",
            minimum=0,
            description="Fraction of each channel's requests "
            "answered 5xx (alert: canary 5 points above stable for 5 min).",
        ),
        Panel(
            "p95 latency: canary vs stable",
            [Target(_by_channel(f"({p95})"), "{{adapter}} {{channel}} ({{version}})")],
            "s",
            minimum=0,
            description="95th percentile request duration of each channel's version (alert: "
            "canary over 1.5x stable for 10 min).",
        ),
        Panel(
            "Canary share of traffic",
            [
                Target(
                    _by_channel(
                        f"({reqs}) / on (adapter) group_left () sum by (adapter) (({reqs}))",
                        "canary",
                    ),
                    "{{adapter}} canary ({{version}})",
                )
            ],
            "percentunit",
            minimum=0,
            maximum=1,
            description="Fraction of each adapter's requests served by its "
            "canary version; should track the canary weight.",
        ),
        Panel(
            "Requests/s: canary vs stable",
            [Target(_by_channel(f"({reqs})"), "{{adapter}} {{channel}} ({{version}})")],
            "reqps",
            description="Requests answered per second by each channel's version.",
        ),
        Row("Release events"),
        Panel(
            "Promotions and rollbacks",
            [
                Target(
                    f"sum by (adapter, forced) (loragate_promotions_total{{{ADAPTER}}})",
                    "promotions {{adapter}} forced={{forced}}",
                ),
                Target(
                    f"sum by (adapter) (loragate_rollbacks_total{{{ADAPTER}}})",
                    "rollbacks {{adapter}}",
                ),
            ],
            "short",
            width=24,
            height=6,
            minimum=0,
            description="Promotions (forced = past the "
            "eval gate) and rollbacks counted since each gateway started; each one is also an "
            "annotation on every panel.",
        ),
    ]

    # An event is an increase, or a counter that appeared within the step (born at 1).
    def event(metric: str) -> str:
        return (f"sum by (adapter) ((increase({metric}{{{ADAPTER}}}[1m]) > 0) "
                f"or ({metric}{{{ADAPTER}}} unless {metric}{{{ADAPTER}}} offset 1m))")  # fmt: skip

    return dashboard(
        "loragate-releases", "loragate / Releases",
        "Which version serves each adapter, canary against stable, promotions and rollbacks.",
        items, [variable("adapter", "Adapter",
                         "label_values(loragate_active_version_info, adapter)")],
        [annotation("Promotions", event("loragate_promotions_total"), "green",
                    "promoted {{adapter}}"),
         annotation("Rollbacks", event("loragate_rollbacks_total"), "red",
                    "rolled back {{adapter}}")],
    )  # fmt: skip


DASHBOARDS = {"fleet.json": fleet, "swaps.json": swaps, "releases.json": releases}


def render() -> dict[str, str]:
    """File name → the JSON text it must contain."""
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path: Path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date (run python deploy/grafana/generate.py):", *stale, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
