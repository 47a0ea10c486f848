"""Generate loragate's Grafana dashboards (deploy/grafana/dashboards/*.json).

    python deploy/grafana/generate.py            # rewrite the JSON files
    python deploy/grafana/generate.py --check    # exit 1 if a committed file is out of date

The JSON files are committed (Grafana's file provisioning reads them as they are); this module
is the source. A test runs `--check`, so an edit here without regenerating fails the suite.
Built with grafana-foundation-sdk (the `dev` extra), Grafana's typed builders for dashboards,
panels and Prometheus queries, in its build for Grafana 11.6 (the version deploy/compose.yaml
runs). Every panel queries the provisioned Prometheus data source (uid `loragate-prometheus`);
`$adapter` / `$engine` are multi-value variables whose "All" is `.*`; rate windows are
Grafana's `$__rate_interval`.
"""

from __future__ import annotations

import argparse
import json
import string
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, Self, TypeVar

from grafana_foundation_sdk.builders import (
    common,
    dashboard,
    heatmap,
    prometheus,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models import common as ui  # Grafana's schemas call these `ui`
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import units
from grafana_foundation_sdk.models.prometheus import PromQueryFormat, QueryEditorMode

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="loragate-prometheus")
RATE = "$__rate_interval"
TOKENS_PER_S = "suffix: tok/s"  # a custom unit: Grafana has none for tokens

Item = Builder[model.Panel] | dashboard.Row  # what a dashboard is made of, in reading order


# --- building blocks -------------------------------------------------------------------------


class _Panel(Protocol):
    """What every panel builder of the SDK has (each panel kind is its own generated class)."""

    def title(self, title: str) -> Self: ...
    def description(self, description: str) -> Self: ...
    def datasource(self, datasource: model.DataSourceRef) -> Self: ...
    def with_target(self, target: Builder[Dataquery]) -> Self: ...
    def unit(self, unit: str) -> Self: ...
    def thresholds(self, thresholds: Builder[model.ThresholdsConfig]) -> Self: ...
    def color_scheme(self, color: Builder[model.FieldColor]) -> Self: ...
    def span(self, w: int) -> Self: ...
    def height(self, h: int) -> Self: ...


P = TypeVar("P", bound=_Panel)


def query(expr: str, legend: str = "") -> prometheus.Dataquery:
    """A range query in code mode; `.instant()` / `.format(...)` change it."""
    return (
        prometheus.Dataquery()
        .expr(expr)
        .legend_format(legend or "__auto")
        .range()
        .format(PromQueryFormat.TIME_SERIES)
        .editor_mode(QueryEditorMode.CODE)
        .datasource(DATASOURCE)
    )


def quantiles(
    metric: str, by: str = "", selector: str = "", qs: Sequence[float] = (0.5, 0.95, 0.99)
) -> list[prometheus.Dataquery]:
    """Quantiles of a histogram (p50/p95/p99 unless `qs`), one series per `by` label if given."""
    series = f"{metric}_bucket{{{selector}}}" if selector else f"{metric}_bucket"
    group, legend = (f"{by}, le", f" {{{{{by}}}}}") if by else ("le", "")
    return [
        query(
            f"histogram_quantile({q}, sum by ({group}) (rate({series}[{RATE}])))",
            f"p{round(q * 100)}{legend}",
        )
        for q in qs
    ]


def _panel(
    panel: P,
    title: str,
    unit: str,
    description: str,
    targets: Sequence[prometheus.Dataquery],
    thresholds: Mapping[float, str] = {},
    color: model.FieldColorModeId = model.FieldColorModeId.PALETTE_CLASSIC,
) -> P:
    """What every panel has: title, description, the data source, targets A, B, ..., a unit,
    threshold steps above a green base."""
    above = [model.Threshold(value, step_color) for value, step_color in thresholds.items()]
    steps = [model.Threshold(None, "green"), *above]  # None: from minus infinity
    panel = panel.title(title).description(description).datasource(DATASOURCE).unit(unit)
    for ref_id, target in zip(string.ascii_uppercase, targets, strict=False):
        panel = panel.with_target(target.ref_id(ref_id))
    panel = panel.thresholds(dashboard.ThresholdsConfig().steps(steps))
    return panel.color_scheme(dashboard.FieldColor().mode(color))


def stat_panel(
    title: str,
    unit: str,
    description: str,
    *targets: prometheus.Dataquery,
    thresholds: Mapping[float, str] = {},
) -> stat.Panel:
    """A 6x4 big number: the last non-null value, coloured by its threshold step."""
    panel = _panel(
        stat.Panel(),
        title,
        unit,
        description,
        targets,
        thresholds,
        model.FieldColorModeId.THRESHOLDS,
    )
    last = common.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)
    return panel.span(6).height(4).reduce_options(last)


def timeseries_panel(
    title: str,
    unit: str,
    description: str,
    *targets: prometheus.Dataquery,
    stack: bool = False,
    low: float | None = None,
    high: float | None = None,
    thresholds: Mapping[float, str] = {},
    width: int = 12,
    height: int = 8,
) -> timeseries.Panel:
    """Lines (stacked and filled if `stack`); thresholds drawn as lines; y axis from `low` to
    `high` where given; every series in the legend and the tooltip."""
    stacking = ui.StackingMode.NORMAL if stack else ui.StackingMode.NONE
    threshold_lines = (
        ui.GraphThresholdsStyleMode.LINE if thresholds else ui.GraphThresholdsStyleMode.OFF
    )
    panel = (
        _panel(timeseries.Panel(), title, unit, description, targets, thresholds)
        .span(width)
        .height(height)
        .draw_style(ui.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(20 if stack else 0)
        .show_points(ui.VisibilityMode.NEVER)
        .span_nulls(False)
        .stacking(common.StackingConfig().mode(stacking).group("A"))
        .thresholds_style(common.GraphThresholdsStyleConfig().mode(threshold_lines))
        .legend(common.VizLegendOptions().show_legend(True))  # as a list below: SDK defaults
        .tooltip(
            common.VizTooltipOptions()
            .mode(ui.TooltipDisplayMode.MULTI)
            .sort(ui.SortOrder.DESCENDING)
        )
    )
    if low is not None:
        panel = panel.min(low)
    if high is not None:
        panel = panel.max(high)
    return panel


def heatmap_panel(
    title: str, unit: str, description: str, target: prometheus.Dataquery
) -> heatmap.Panel:
    """Prometheus's `le` buckets as they are (the SDK's defaults: not calculated, Grafana's
    Oranges scheme, a legend), one cell per bucket and step, a histogram in the tooltip."""
    return (
        _panel(heatmap.Panel(), title, unit, description, [target])
        .span(12)
        .height(8)
        .max_data_points(60)
        .y_axis(heatmap.YAxisConfig().unit(unit).axis_placement(ui.AxisPlacement.LEFT))
        .rows_frame(heatmap.RowsHeatmapOptions().layout(ui.HeatmapCellLayout.LE))
        .show_y_histogram()
    )


def table_panel(
    title: str, description: str, target: prometheus.Dataquery, height: int
) -> table.Panel:
    """The labels of an instant query, one row per series."""
    # Label columns only: the value is 1 (info metrics) or vLLM's update timestamp.
    hidden = {"Time": True, "Value": True, "__name__": True}
    labels = model.DataTransformerConfig("organize", options={"excludeByName": hidden})
    target = target.instant().format(PromQueryFormat.TABLE)
    panel = _panel(table.Panel(), title, units.Short, description, [target])
    return (
        panel.span(12).height(height).cell_height(ui.TableCellHeight.SM).with_transformation(labels)
    )


def variable(name: str, label: str, values_of: str) -> dashboard.QueryVariable:
    """A multi-value variable over a label's values, "All" (`.*`) by default."""
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query({"query": values_of, "refId": f"{name}-values"})
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .sort(model.VariableSort.ALPHABETICAL_ASC)
    )


class PrometheusAnnotation(model.AnnotationQuery, Builder[model.AnnotationQuery]):
    """Vertical markers where `expr` has a value, titled `title` (legend placeholders work).

    Grafana's dashboard schema, hence the SDK, has only the `expr` of a Prometheus annotation;
    the data source also reads these fields (its `AnnotationQuery<PromQuery>`)."""

    def __init__(self, name: str, expr: str, color: str, title: str) -> None:
        super().__init__(name, DATASOURCE, enable=True, icon_color=color, expr=expr)
        self.title_format = title

    def build(self) -> model.AnnotationQuery:
        return self

    def to_json(self) -> dict[str, object]:
        prometheus_only = {
            "step": "30s",
            "titleFormat": self.title_format,
            "tagKeys": "adapter",
            "textFormat": "",
            "useValueForTime": False,
        }
        return {**super().to_json(), **prometheus_only}


def build_dashboard(
    uid: str,
    title: str,
    description: str,
    variable: dashboard.QueryVariable,
    items: Sequence[Item],
    annotations: Sequence[PrometheusAnnotation] = (),
) -> model.Dashboard:
    """A loragate dashboard. The SDK lays the panels out left to right and starts a new line
    when one is full (a panel too wide for the rest of its line overlaps the grid's edge, which
    loadtest/dashboards.py's structural check reports); panel ids are numbered in reading order."""
    board = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["loragate"])
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .version(1)
        .refresh("30s")
        .time("now-1h", "now")
        .with_variable(variable)
        .annotation(
            dashboard.AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(model.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
            .built_in(1)
        )
        .link(
            dashboard.DashboardLink("loragate")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(["loragate"])
        )
    )
    for annotation in annotations:
        board = board.annotation(annotation)
    for item in items:
        board = board.with_row(item) if isinstance(item, dashboard.Row) else board.with_panel(item)
    built = board.build()
    for panel_id, panel in enumerate(built.panels or [], start=1):
        panel.id_val = panel_id
    return built


# --- the dashboards --------------------------------------------------------------------------

ADAPTER = 'adapter=~"$adapter"'
ENGINE = 'engine=~"$engine"'
REQS = f"loragate_requests_total{{{ADAPTER}}}"
ERRS = f'loragate_requests_total{{{ADAPTER}, code=~"5.."}}'
VLLM = "Engines (vLLM's own metrics)"


def fleet() -> model.Dashboard:
    return build_dashboard(
        "loragate-fleet",
        "loragate / Fleet overview",
        "Traffic, errors, latency and tokens per adapter; gateway overhead; engine health.",
        variable("adapter", "Adapter", "label_values(loragate_requests_total, adapter)"),
        [
            *_fleet_stats(),
            dashboard.Row("Traffic"),
            *_fleet_traffic(),
            dashboard.Row("Latency"),
            *_fleet_latency(),
            dashboard.Row(VLLM),
            *_fleet_engines(),
        ],
    )


def _fleet_stats() -> list[Item]:
    return [
        stat_panel(
            "Requests/s",
            units.RequestsPerSecond,
            "Requests answered per second, all adapters selected.",
            query(f"sum(rate({REQS}[{RATE}]))", "requests/s"),
        ),
        stat_panel(
            "5xx ratio",
            units.PercentUnit,
            "Fraction of requests answered 5xx.",
            query(f"sum(rate({ERRS}[{RATE}])) / sum(rate({REQS}[{RATE}]))", "5xx"),
            thresholds={0.01: "orange", 0.05: "red"},
        ),
        stat_panel(
            "p99 latency",
            units.Seconds,
            "99th percentile of request duration, request to last byte (alert: over 10 s).",
            *quantiles("loragate_request_duration_seconds", selector=ADAPTER, qs=[0.99]),
            thresholds={5.0: "orange", 10.0: "red"},
        ),
        stat_panel(
            "Engines up",
            units.Short,
            "Engines answering the gateway's health check, of those configured.",
            query("sum(loragate_engine_up)", "up"),
            query("count(loragate_engine_up)", "configured"),
        ),
    ]


def _fleet_traffic() -> list[Item]:
    return [
        timeseries_panel(
            "Requests/s by adapter",
            units.RequestsPerSecond,
            "Requests answered per second, by adapter (the base model as its id).",
            query(f"sum by (adapter) (rate({REQS}[{RATE}]))", "{{adapter}}"),
            stack=True,
        ),
        timeseries_panel(
            "Requests/s by status",
            units.RequestsPerSecond,
            "Requests answered per second, by HTTP status.",
            query(f"sum by (code) (rate({REQS}[{RATE}]))", "{{code}}"),
            stack=True,
        ),
        timeseries_panel(
            "5xx ratio by adapter",
            units.PercentUnit,
            "Fraction of each adapter's requests answered 5xx (alert: over 5 % for 5 min).",
            query(
                f"sum by (adapter) (rate({ERRS}[{RATE}])) "
                f"/ sum by (adapter) (rate({REQS}[{RATE}]))",
                "{{adapter}}",
            ),
            low=0,
            thresholds={0.05: "red"},
        ),
        timeseries_panel(
            "Tokens/s by adapter",
            TOKENS_PER_S,
            "Prompt and completion tokens per second, from the engines' usage.",
            query(
                f"sum by (adapter, kind) (rate(loragate_tokens_total{{{ADAPTER}}}[{RATE}]))",
                "{{adapter}} {{kind}}",
            ),
            stack=True,
        ),
    ]


def _fleet_latency() -> list[Item]:
    return [
        timeseries_panel(
            "Request latency by adapter",
            units.Seconds,
            "p50/p95/p99 of request duration (request to last byte), by adapter.",
            *quantiles("loragate_request_duration_seconds", "adapter", ADAPTER),
            thresholds={10.0: "red"},
        ),
        timeseries_panel(
            "Time to first token by adapter",
            units.Seconds,
            "p50/p95/p99 of time to the first streamed byte (streaming requests), by adapter; "
            "adapter loads land here.",
            *quantiles("loragate_time_to_first_token_seconds", "adapter", ADAPTER),
            thresholds={2.0: "red"},
        ),
        timeseries_panel(
            "Gateway overhead",
            units.Seconds,
            "Time spent in the gateway itself, excluding adapter loads and generation "
            "(alert: p99 over 50 ms).",
            *quantiles("loragate_gateway_overhead_seconds"),
            thresholds={0.05: "red"},
        ),
        timeseries_panel(
            "In-flight requests by engine",
            units.Short,
            "Requests the gateway has in flight to each engine.",
            query("sum by (engine) (loragate_inflight_requests)", "{{engine}}"),
        ),
    ]


def _fleet_engines() -> list[Item]:
    return [
        timeseries_panel(
            "Engine health",
            units.Short,
            "1 = healthy: the gateway's /health check per engine, and Prometheus's scrape of "
            "each engine.",
            query("loragate_engine_up", "gateway check {{engine}}"),
            query('up{job="vllm"}', "scrape {{instance}}"),
            width=8,
            low=0,
            high=1,
        ),
        timeseries_panel(
            "vLLM requests running",
            units.Short,
            "vllm:num_requests_running: requests in the engine's batches.",
            query("sum by (instance) (vllm:num_requests_running)", "{{instance}}"),
            width=8,
        ),
        timeseries_panel(
            "vLLM requests waiting",
            units.Short,
            "vllm:num_requests_waiting: requests queued in the engine.",
            query("sum by (instance) (vllm:num_requests_waiting)", "{{instance}}"),
            width=8,
        ),
        timeseries_panel(
            "Engine restarts",
            units.Short,
            "Managed engine processes that exited and were restarted, since the gateway started "
            "(alert: more than 2 in 15 min).",
            query("sum by (engine) (loragate_engine_restarts_total)", "{{engine}}"),
            width=24,
            height=6,
        ),
    ]


def swaps() -> model.Dashboard:
    return build_dashboard(
        "loragate-swaps",
        "loragate / Swaps and thrashing",
        "Adapter residency on the engines: loads, evictions, thrashing, hit ratio, load waits.",
        variable("engine", "Engine", "label_values(loragate_adapter_slots, engine)"),
        [
            *_swap_stats(),
            dashboard.Row("Adapter loads"),
            *_swap_loads(),
            dashboard.Row("Residency"),
            *_swap_residency(),
            dashboard.Row(VLLM),
            *_swap_engines(),
        ],
    )


LOOKUPS = "loragate_registry_lookups_total"
FIRST_EXTRA = "loragate_adapter_first_request_extra_seconds"


def _swap_stats() -> list[Item]:
    return [
        stat_panel(
            "Swap/request ratio",
            units.PercentUnit,
            "Adapter loads per adapter request over the gateway's sliding window (alert: over "
            "30 % for 10 min).",
            query("max(loragate_swap_request_ratio)", "ratio"),
            thresholds={0.1: "orange", 0.3: "red"},
        ),
        stat_panel(
            "Residency hit ratio",
            units.PercentUnit,
            "Adapter requests whose version was already resident.",
            query(
                f'sum(rate({LOOKUPS}{{{ENGINE}, result="hit"}}[{RATE}])) '
                f"/ sum(rate({LOOKUPS}{{{ENGINE}}}[{RATE}]))",
                "hits",
            ),
        ),
        stat_panel(
            "Thrash reloads/min",
            units.Short,
            "Versions reloaded within thrash_window_s of their eviction, per minute (alert: over "
            "2/min for one adapter, 5 min).",
            query(f"sum(rate(loragate_adapter_thrash_total[{RATE}])) * 60", "reloads/min"),
            thresholds={1.0: "orange", 2.0: "red"},
        ),
        stat_panel(
            "Load p95",
            units.Seconds,
            "95th percentile of the engine's adapter load call.",
            *quantiles("loragate_adapter_load_seconds", selector=ENGINE, qs=[0.95]),
        ),
    ]


def _swap_loads() -> list[Item]:
    def per_s(metric: str, by: str, legend: str, selector: str = ENGINE) -> prometheus.Dataquery:
        series = f"{metric}{{{selector}}}" if selector else metric
        return query(f"sum by ({by}) (rate({series}[{RATE}]))", f"{legend} {{{{{by}}}}}")

    return [
        heatmap_panel(
            "Load latency heatmap",
            units.Seconds,
            "Adapter load durations (the engine's load call), per histogram bucket.",
            query(
                f"sum by (le) (increase(loragate_adapter_load_seconds_bucket{{{ENGINE}}}[{RATE}]))",
                "{{le}}",
            ).format(PromQueryFormat.HEATMAP),
        ),
        timeseries_panel(
            "Load latency by engine",
            units.Seconds,
            "p50/p95/p99 of the engine's adapter load call, by engine.",
            *quantiles("loragate_adapter_load_seconds", "engine", ENGINE),
        ),
        timeseries_panel(
            "Loads, evictions, thrash per second",
            units.OpsPerSecond,
            "Adapter loads and evictions per engine; thrash reloads per adapter (a reload within "
            "thrash_window_s of the eviction); requests that had to wait for a load, per engine.",
            per_s("loragate_adapter_loads_total", "engine", "loads"),
            per_s("loragate_adapter_evictions_total", "engine", "evictions"),
            per_s("loragate_adapter_thrash_total", "adapter", "thrash", selector=""),
            per_s("loragate_load_wait_seconds_count", "engine", "load waits"),
        ),
        timeseries_panel(
            "Loads and load failures by adapter",
            units.OpsPerSecond,
            "Which adapters are being swapped in, and which fail to load (alert: any failure in "
            "10 min).",
            per_s("loragate_adapter_loads_total", "adapter", "loads"),
            per_s("loragate_adapter_load_failures_total", "adapter", "failures"),
        ),
        timeseries_panel(
            "First request after a load: extra time",
            units.Seconds,
            "p50/p95/p99 of the engine time the first request after an adapter load spends over "
            "a resident request's (host to device slot), time to the engine's first byte of "
            "streamed requests, by engine.",
            *quantiles(FIRST_EXTRA, "engine", f'{ENGINE}, measure="first_byte"'),
        ),
        timeseries_panel(
            "Swap cost by tier (p95)",
            units.Seconds,
            "What a swap costs, per engine: the engine's load call (disk to host memory) and the "
            "first request's extra time (host to device; first_byte: streams, total: whole "
            "answers, which also vary with their length).",
            query(
                "histogram_quantile(0.95, sum by (engine, le) "
                f"(rate(loragate_adapter_load_seconds_bucket{{{ENGINE}}}[{RATE}])))",
                "load call {{engine}}",
            ),
            query(
                "histogram_quantile(0.95, sum by (engine, measure, le) "
                f"(rate({FIRST_EXTRA}_bucket{{{ENGINE}}}[{RATE}])))",
                "first request {{measure}} {{engine}}",
            ),
        ),
    ]


def _swap_residency() -> list[Item]:
    return [
        timeseries_panel(
            "Residency hit ratio by engine",
            units.PercentUnit,
            "Fraction of adapter requests that found their version resident.",
            query(
                f'sum by (engine) (rate({LOOKUPS}{{{ENGINE}, result="hit"}}[{RATE}])) '
                f"/ sum by (engine) (rate({LOOKUPS}{{{ENGINE}}}[{RATE}]))",
                "{{engine}}",
            ),
            low=0,
            high=1,
        ),
        timeseries_panel(
            "Resident adapters vs slots",
            units.Short,
            "Adapter versions loaded on each engine, against the slots the registry manages "
            "there (max_cpu_loras).",
            query(
                f"sum by (engine) (loragate_resident_adapters{{{ENGINE}}})", "resident {{engine}}"
            ),
            query(f"sum by (engine) (loragate_adapter_slots{{{ENGINE}}})", "slots {{engine}}"),
            low=0,
        ),
        timeseries_panel(
            "Load wait time",
            units.Seconds,
            "How long requests that missed waited for their adapter to become resident "
            "(p50/p95/p99): their share of a load, or a wait for a free slot.",
            *quantiles("loragate_load_wait_seconds", "engine", ENGINE),
        ),
        timeseries_panel(
            "Swap/request ratio by gateway",
            units.PercentUnit,
            "Adapter loads per adapter request over each gateway's sliding window "
            "(swap_ratio_window_s).",
            query("loragate_swap_request_ratio", "{{instance}}"),
            low=0,
            thresholds={0.3: "red"},
        ),
    ]


def _swap_engines() -> list[Item]:
    return [
        table_panel(
            "vLLM LoRA requests",
            "vllm:lora_requests_info, latest per engine: max_lora and the adapters with running "
            "/ waiting requests.",
            query("topk by (instance) (1, vllm:lora_requests_info)"),
            height=6,
        ),
        timeseries_panel(
            "vLLM requests running and waiting",
            units.Short,
            "vllm:num_requests_running / _waiting per engine: adapter loads pause decoding, so "
            "swaps show up as waiting requests.",
            query("sum by (instance) (vllm:num_requests_running)", "running {{instance}}"),
            query("sum by (instance) (vllm:num_requests_waiting)", "waiting {{instance}}"),
            height=6,
        ),
    ]


def releases() -> model.Dashboard:
    return build_dashboard(
        "loragate-releases",
        "loragate / Releases",
        "Which version serves each adapter, canary against stable, promotions and rollbacks.",
        variable("adapter", "Adapter", "label_values(loragate_active_version_info, adapter)"),
        [
            *_release_versions(),
            dashboard.Row("Canary vs stable"),
            *_release_channels(),
            dashboard.Row("Release events"),
            _release_events(),
            dashboard.Row("Safe rollout: automatic canaries and shadows"),
            *_release_rollout(),
        ],
        [
            PrometheusAnnotation(
                "Promotions", _event("loragate_promotions_total"), "green", "promoted {{adapter}}"
            ),
            PrometheusAnnotation(
                "Rollbacks", _event("loragate_rollbacks_total"), "red", "rolled back {{adapter}}"
            ),
            PrometheusAnnotation(
                "Canary rollbacks",
                _event("loragate_canary_rollbacks_total"),
                "orange",
                "canary of {{adapter}} rolled back automatically",
            ),
        ],
    )


def _event(metric: str) -> str:
    """One sample per adapter where `metric` increased, or appeared within the step (a counter
    is born at 1, which `increase()` does not see)."""
    return (
        f"sum by (adapter) ((increase({metric}{{{ADAPTER}}}[1m]) > 0) "
        f"or ({metric}{{{ADAPTER}}} unless {metric}{{{ADAPTER}}} offset 1m))"
    )


def _by_channel(inner: str, channels: str = "stable|canary") -> str:
    """`inner` (by adapter, version) labelled with the release channel pointing at it."""
    return (
        f"{inner} * on (adapter, version) group_left (channel) max by (adapter, version, channel) "
        f'(loragate_active_version_info{{{ADAPTER}, channel=~"{channels}"}})'
    )


def _release_versions() -> list[Item]:
    return [
        table_panel(
            "Active versions",
            "The version each release channel (stable, previous, canary) points at now.",
            query(
                f"max by (adapter, channel, version) (loragate_active_version_info{{{ADAPTER}}})"
            ),
            height=7,
        ),
        timeseries_panel(
            "Requests/s by version",
            units.RequestsPerSecond,
            "Requests answered per second by exact version (stable, canary, pinned name@version).",
            query(
                "sum by (adapter, version) "
                f'(rate(loragate_requests_total{{{ADAPTER}, version!=""}}[{RATE}]))',
                "{{adapter}}@{{version}}",
            ),
            height=7,
            stack=True,
        ),
    ]


def _release_channels() -> list[Item]:
    reqs = f"sum by (adapter, version) (rate(loragate_requests_total{{{ADAPTER}}}[{RATE}]))"
    errs = f"sum by (adapter, version) (rate({ERRS}[{RATE}]))"
    p95 = (
        "histogram_quantile(0.95, sum by (adapter, version, le) "
        f"(rate(loragate_request_duration_seconds_bucket{{{ADAPTER}}}[{RATE}])))"
    )
    legend = "{{adapter}} {{channel}} ({{version}})"
    share = f"({reqs}) / on (adapter) group_left () sum by (adapter) (({reqs}))"
    return [
        timeseries_panel(
            "5xx ratio: canary vs stable",
            units.PercentUnit,
            "Fraction of each channel's requests answered 5xx (alert: canary 5 points above "
            "stable for 5 min).",
            query(_by_channel(f"((({errs}) or ({reqs}) * 0) / ({reqs}))"), legend),
            low=0,
        ),
        timeseries_panel(
            "p95 latency: canary vs stable",
            units.Seconds,
            "95th percentile request duration of each channel's version (alert: canary over "
            "1.5x stable for 10 min).",
            query(_by_channel(f"({p95})"), legend),
            low=0,
        ),
        timeseries_panel(
            "Canary share of traffic",
            units.PercentUnit,
            "Fraction of each adapter's requests served by its canary version; should track the "
            "canary weight.",
            query(_by_channel(share, "canary"), "{{adapter}} canary ({{version}})"),
            low=0,
            high=1,
        ),
        timeseries_panel(
            "Requests/s: canary vs stable",
            units.RequestsPerSecond,
            "Requests answered per second by each channel's version.",
            query(_by_channel(f"({reqs})"), legend),
        ),
    ]


def _release_events() -> Item:
    return timeseries_panel(
        "Promotions and rollbacks",
        units.Short,
        "Promotions (forced = past the eval gate) and rollbacks counted since each gateway "
        "started; each one is also an annotation on every panel.",
        query(
            f"sum by (adapter, forced) (loragate_promotions_total{{{ADAPTER}}})",
            "promotions {{adapter}} forced={{forced}}",
        ),
        query(
            f"sum by (adapter) (loragate_rollbacks_total{{{ADAPTER}}})",
            "rollbacks {{adapter}}",
        ),
        width=24,
        height=6,
        low=0,
    )


def _release_rollout() -> list[Item]:
    return [
        timeseries_panel(
            "Automatic canary rollbacks and steps",
            units.Short,
            "Canaries a gateway set to weight 0 by itself, by the bound broken (error_rate, "
            "latency, violations; gate: promotion refused after the last step; alert: any), and "
            "progressive steps advanced, counted since each gateway started.",
            query(
                f"sum by (adapter, reason) (loragate_canary_rollbacks_total{{{ADAPTER}}})",
                "rollbacks {{adapter}} {{reason}}",
            ),
            query(
                f"sum by (adapter) (loragate_canary_steps_total{{{ADAPTER}}})",
                "steps {{adapter}}",
            ),
            low=0,
        ),
        timeseries_panel(
            "Shadow requests/s by outcome",
            units.RequestsPerSecond,
            "Requests mirrored to each adapter's shadow candidate: answered, failed, or dropped "
            "(limit: the gateway's shadow_max_inflight; busy: the engine's admission queue; "
            "cold: the candidate not loaded).",
            query(
                "sum by (adapter, outcome) "
                f"(rate(loragate_shadow_requests_total{{{ADAPTER}}}[{RATE}]))",
                "{{adapter}} {{outcome}}",
            ),
            stack=True,
        ),
    ]


DASHBOARDS = {"fleet.json": fleet, "swaps.json": swaps, "releases.json": releases}


def render() -> dict[str, str]:
    """File name → the JSON text it must contain."""
    return {
        name: json.dumps(build(), cls=JSONEncoder, indent=2) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate loragate's Grafana dashboards.")
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
