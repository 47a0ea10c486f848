"""Render each Grafana dashboard (deploy/grafana/dashboards) to one PNG from real Prometheus
query results: the panels where Grafana puts them (gridPos), with their titles and units.

    python -m loadtest.render_dashboards --prometheus http://127.0.0.1:9090 --last 15m \\
        --out docs/dashboards

Grafana cannot run on these machines; this shows what the dashboards show, from the same
queries. Timeseries panels are lines (query_range), stat panels the last value, heatmaps the
per-bucket increases, tables the labels of an instant query; annotation queries become
vertical markers on every timeseries panel. Variables are "All" (`.*`) and
`$__rate_interval` is computed as Grafana does: max(step + scrape interval, 4 x scrape interval).
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import DateFormatter, date2num
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from loadtest import dashboards
from loadtest.promapi import PrometheusAPI, Series

Json = dict[str, Any]

COL_IN, ROW_IN, TOP_IN = 16 / 24, 0.34, 0.7  # inches per grid column / grid row; title band
BG, PANEL_BG, GRID, TEXT, MUTED = "#111217", "#181b1f", "#2c3235", "#ccccdc", "#8e8e9e"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9",
           "#fade2a", "#37872d", "#c4162a", "#1f60c4", "#8f3bb8"]  # fmt: skip
LEGEND_ROWS, LEGEND_ROW_IN, TICKS_IN = 2, 0.16, 0.25  # legend under a timeseries; x tick labels


# --- units -----------------------------------------------------------------------------------


def format_value(value: float, unit: str | None) -> str:
    """A value as Grafana shows it for `unit` (the units our dashboards use)."""
    if value != value:
        return "NaN"
    unit = unit or "short"
    if unit == "s":
        magnitude = abs(value)
        if magnitude == 0:
            return "0 s"
        if magnitude < 1e-3:
            return f"{value * 1e6:.3g} µs"
        if magnitude < 1:
            return f"{value * 1e3:.3g} ms"
        if magnitude < 120:
            return f"{value:.3g} s"
        return f"{value / 60:.3g} min"
    if unit == "percentunit":
        return f"{value * 100:.3g}%"
    if unit == "reqps":
        return f"{_short(value)} req/s"
    if unit == "ops":
        return f"{_short(value)} ops/s"
    if unit.startswith("suffix:"):
        return f"{_short(value)}{unit.removeprefix('suffix:')}"
    return _short(value)


def _short(value: float) -> str:
    for factor, suffix in ((1e9, " Bil"), (1e6, " Mil"), (1e3, " K")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def rate_interval(step_s: float, scrape_interval_s: float) -> str:
    return f"{math.ceil(max(step_s + scrape_interval_s, 4 * scrape_interval_s))}s"


# --- one dashboard ---------------------------------------------------------------------------


class DashboardRenderer:
    """Draws one dashboard's panels from `api` over [start, end]."""

    def __init__(
        self, api: PrometheusAPI, start: float, end: float, step: float, scrape_interval_s: float,
        interval: str | None = None,
    ) -> None:  # fmt: skip
        self.api, self.start, self.end, self.step = api, start, end, step
        self.interval = interval or rate_interval(step, scrape_interval_s)
        self.range = f"{math.ceil(end - start)}s"

    def expand(self, expr: str) -> str:
        return dashboards.expand(expr, rate_interval=self.interval, range_=self.range,
                                 interval=f"{self.step:g}s")  # fmt: skip

    def render(self, dashboard: Json, path: Path) -> Path:
        panels = list(dashboards.panels(dashboard))
        rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
        width, height = 24 * COL_IN, rows * ROW_IN + TOP_IN
        fig = Figure(figsize=(width, height), dpi=100, facecolor=BG)
        FigureCanvasAgg(fig)
        self._figure, self._figure_height_in = fig, height
        span = f"{_clock(self.start)} to {_clock(self.end)}"
        fig.text(0.01, 1 - 0.35 / height, dashboard["title"], color=TEXT, fontsize=15,
                 weight="bold", va="center")  # fmt: skip
        fig.text(0.99, 1 - 0.35 / height, f"{span}   rate interval {self.interval}",
                 color=MUTED, fontsize=9, va="center", ha="right")  # fmt: skip
        events = self.annotations(dashboard)
        for panel in panels:
            g = panel["gridPos"]
            left, top = g["x"] * COL_IN / width, (TOP_IN + g["y"] * ROW_IN) / height
            w, h = g["w"] * COL_IN / width, g["h"] * ROW_IN / height
            if panel["type"] == "row":
                fig.text(left + 0.005, 1 - top - h / 2, panel["title"], color=TEXT, fontsize=12,
                         weight="bold", va="center")  # fmt: skip
                continue
            self.panel(fig, panel, (left, 1 - top - h, w, h), events)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, facecolor=BG)
        return path

    def annotations(self, dashboard: Json) -> list[tuple[float, str, str]]:
        """(time, text, color) of each annotation event: the first step of every run of
        consecutive steps where an annotation query has a value."""
        events = []
        for item in dashboard.get("annotations", {}).get("list", []):
            if item.get("builtIn"):
                continue
            for series in self.api.query_range(self.expand(item["expr"]), self.start, self.end,
                                               self.step):  # fmt: skip
                previous = -math.inf
                for t, _ in series.points:
                    if t - previous > self.step * 1.5:
                        events.append((t, series.legend(item.get("titleFormat", "")),
                                       item.get("iconColor", "red")))  # fmt: skip
                    previous = t
        return events

    def panel(
        self, fig: Figure, panel: Json, box: tuple[float, float, float, float],
        events: list[tuple[float, str, str]],
    ) -> None:  # fmt: skip
        left, bottom, w, h = box
        pad_x, pad_y = 0.004, 0.003
        frame = fig.add_axes((left + pad_x, bottom + pad_y, w - 2 * pad_x, h - 2 * pad_y))
        frame.set_facecolor(PANEL_BG)
        frame.set_xticks([])
        frame.set_yticks([])
        for spine in frame.spines.values():
            spine.set_color(GRID)
        unit = dashboards.unit(panel)
        title = panel["title"] + (f"  [{_unit_label(unit)}]" if unit else "")
        frame.set_title(title, color=TEXT, fontsize=10, loc="left", pad=-13, x=0.01)
        inner = fig.add_axes(self._inner(panel["type"], left + pad_x, bottom + pad_y,
                                         w - 2 * pad_x, h - 2 * pad_y, fig))  # fmt: skip
        inner.set_facecolor(PANEL_BG)
        kind = panel["type"]
        if kind == "stat":
            self.stat(inner, panel, unit)
        elif kind == "table":
            self.table(inner, panel)
        elif kind == "heatmap":
            self.heatmap(inner, panel, unit)
        else:
            self.timeseries(inner, panel, unit, events)

    def _inner(
        self, kind: str, left: float, bottom: float, w: float, h: float, fig: Figure
    ) -> tuple[float, float, float, float]:
        fw, fh = fig.get_size_inches()
        top_pad = 0.3 / fh
        if kind in ("stat", "table"):
            return (left + 0.1 / fw, bottom + 0.05 / fh, w - 0.2 / fw, h - top_pad - 0.08 / fh)
        legend = LEGEND_ROWS * LEGEND_ROW_IN / fh if kind == "timeseries" else 0.0
        return (left + 0.75 / fw, bottom + (TICKS_IN + 0.05) / fh + legend, w - 0.9 / fw,
                h - top_pad - (TICKS_IN + 0.1) / fh - legend)  # fmt: skip

    # --- panel kinds ---

    def _range(self, panel: Json) -> list[tuple[Series, str]]:
        found = []
        for target in panel["targets"]:
            expr = self.expand(target["expr"])
            for series in self.api.query_range(expr, self.start, self.end, self.step):
                found.append((series, series.legend(target.get("legendFormat", ""))))
        return found

    def timeseries(
        self, ax: Axes, panel: Json, unit: str | None, events: list[tuple[float, str, str]]
    ) -> None:
        _style(ax)
        found = self._range(panel)
        columns = max(2, panel["gridPos"]["w"] // 3)
        shown = LEGEND_ROWS * columns - (1 if len(found) > LEGEND_ROWS * columns else 0)
        for i, (series, label) in enumerate(sorted(found, key=lambda s: s[1])):
            times, values = self._with_gaps(series)
            ax.plot(times, values, color=PALETTE[i % len(PALETTE)], linewidth=1.2,
                    label=label if i < shown else None)  # fmt: skip
        ax.set_xlim(_x(self.start), _x(self.end))
        ax.xaxis.set_major_formatter(_CLOCK)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_value(v, unit)))
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        if "min" in defaults or "max" in defaults:
            ax.set_ylim(bottom=defaults.get("min"), top=defaults.get("max"))
        for t, text, color in events:
            ax.axvline(_x(t), color=color, linestyle="--", linewidth=1)
            ax.text(_x(t), 1.0, f" {text}", color=color, fontsize=7,
                    transform=ax.get_xaxis_transform(), va="top")  # fmt: skip
        if not found:
            _no_data(ax)
            return
        if len(found) > shown:  # the last legend slot says how many series are not listed
            ax.plot([], [], color=PANEL_BG, label=f"(+{len(found) - shown} more series)")
        height_in = ax.get_position().height * self._figure_height_in
        ax.legend(loc="upper left", bbox_to_anchor=(0, -TICKS_IN / height_in), ncol=columns,
                  fontsize=7, frameon=False, labelcolor=TEXT, borderaxespad=0,
                  handlelength=1.5, columnspacing=1.2)  # fmt: skip

    def _with_gaps(self, series: Series) -> tuple[list[float], list[float]]:
        """Points as plot coordinates, with a NaN where a step has no sample (a series that
        disappears and comes back is drawn with a gap, like Grafana's spanNulls: false)."""
        times: list[float] = []
        values: list[float] = []
        previous = None
        for t, v in series.points:
            if previous is not None and t - previous > self.step * 1.5:
                times.append(_x(previous + self.step))
                values.append(math.nan)
            times.append(_x(t))
            values.append(v if math.isfinite(v) else math.nan)
            previous = t
        return times, values

    def stat(self, ax: Axes, panel: Json, unit: str | None) -> None:
        ax.axis("off")
        values = []
        for target in panel["targets"]:
            for series in self.api.query(self.expand(target["expr"]), at=self.end):
                values.append((series.legend(target.get("legendFormat", "")), series.last()))
        if not values:
            _no_data(ax)
            return
        steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {})
        text = " / ".join(format_value(v, unit) for _, v in values)
        color = _threshold_color(values[0][1], steps.get("steps", []))
        ax.text(0.5, 0.45, text, color=color, fontsize=22, weight="bold", ha="center",
                va="center", transform=ax.transAxes)  # fmt: skip
        ax.text(0.5, 0.05, " / ".join(label for label, _ in values), color=MUTED, fontsize=8,
                ha="center", transform=ax.transAxes)  # fmt: skip

    def table(self, ax: Axes, panel: Json) -> None:
        ax.axis("off")
        hidden: set[str] = set()
        for step in panel.get("transformations", []):
            hidden |= {k for k, v in step.get("options", {}).get("excludeByName", {}).items() if v}
        rows: list[Series] = []
        for target in panel["targets"]:
            rows += self.api.query(self.expand(target["expr"]), at=self.end)
        columns = sorted({k for s in rows for k in s.labels} - hidden)
        if "Value" not in hidden:
            columns.append("Value")
        if not rows or not columns:
            _no_data(ax)
            return
        cells = [[s.labels.get(c, "") if c != "Value" else _short(s.last()) for c in columns]
                 for s in sorted(rows, key=lambda s: sorted(s.labels.items()))]  # fmt: skip
        table = ax.table(cellText=cells[:12], colLabels=columns, loc="upper center",
                         cellLoc="left", colLoc="left")  # fmt: skip
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        for (row, _), cell in table.get_celld().items():
            cell.set_facecolor(GRID if row == 0 else PANEL_BG)
            cell.set_edgecolor(BG)
            cell.get_text().set_color(TEXT)

    def heatmap(self, ax: Axes, panel: Json, unit: str | None) -> None:
        _style(ax)
        buckets: dict[float, dict[float, float]] = {}
        for series, _ in self._range(panel):
            le = float(series.labels.get("le", "nan"))
            buckets[le] = {t: v for t, v in series.points}
        if not buckets:
            _no_data(ax)
            return
        bounds = sorted(buckets)
        times = sorted({t for points in buckets.values() for t in points})
        # Cumulative `le` buckets → counts per bucket (what Grafana's heatmap format does).
        matrix = []
        for lower, upper in zip([None, *bounds[:-1]], bounds, strict=True):
            row = []
            for t in times:
                count = buckets[upper].get(t, 0.0) - (buckets[lower].get(t, 0.0) if lower else 0)
                row.append(max(count, 0.0) if math.isfinite(count) else 0.0)
            matrix.append(row)
        xs = [_x(t) for t in [*times, times[-1] + self.step]]
        mesh = ax.pcolormesh(xs, range(len(bounds) + 1), matrix, cmap="Oranges", shading="flat")
        labels = [format_value(b, unit) if math.isfinite(b) else "+Inf" for b in bounds]
        ax.set_yticks([i + 0.5 for i in range(len(bounds))], labels, fontsize=6)
        ax.xaxis.set_major_formatter(_CLOCK)
        bar = self._figure.colorbar(mesh, ax=ax, pad=0.01, fraction=0.04)
        bar.ax.tick_params(colors=MUTED, labelsize=6)
        bar.set_label("loads per bucket", color=MUTED, fontsize=7)


_CLOCK = DateFormatter("%H:%M:%S")  # type: ignore[no-untyped-call]


def _x(t: float) -> float:
    """Unix seconds as matplotlib's date axis unit (days since its epoch, local time)."""
    return float(date2num(datetime.fromtimestamp(t)))  # type: ignore[no-untyped-call]


def _style(ax: Axes) -> None:
    ax.tick_params(colors=MUTED, labelsize=7)
    ax.grid(True, color=GRID, linewidth=0.6)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "No data", color=MUTED, fontsize=11, ha="center", va="center",
            transform=ax.transAxes)  # fmt: skip


def _threshold_color(value: float, steps: Sequence[Json]) -> str:
    names = {"green": "#73bf69", "orange": "#ff9830", "red": "#f2495c"}
    color = "green"
    for step in steps:
        if step.get("value") is None or value >= step["value"]:
            color = step.get("color", color)
    return names.get(color, color)


def _unit_label(unit: str) -> str:
    return {"s": "seconds", "percentunit": "%", "reqps": "req/s", "ops": "ops/s",
            "short": "count"}.get(unit, unit.removeprefix("suffix:").strip())  # fmt: skip


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


# --- all dashboards, CLI ---------------------------------------------------------------------


def render_all(
    api: PrometheusAPI, start: float, end: float, out: Path, *, step: float,
    scrape_interval_s: float, directory: Path = dashboards.DASHBOARD_DIR,
    interval: str | None = None,
) -> list[Path]:  # fmt: skip
    """One PNG per dashboard in `out` (named like its JSON file); the paths written.
    `interval` replaces the computed `$__rate_interval` (as a panel's min interval would)."""
    matplotlib.rcParams["font.family"] = "DejaVu Sans"
    renderer = DashboardRenderer(api, start, end, step, scrape_interval_s, interval)
    return [renderer.render(board, out / f"{stem}.png")
            for stem, board in dashboards.load(directory).items()]  # fmt: skip


def _duration_s(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh])", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: use e.g. 90s, 15m, 2h")
    return float(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.render_dashboards",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--last", type=_duration_s, default=900.0, help="window ending now")
    parser.add_argument("--start", type=float, help="unix seconds (instead of --last)")
    parser.add_argument("--end", type=float, help="unix seconds (default: now)")
    parser.add_argument("--step", type=float, help="seconds between points (default: 1/150)")
    parser.add_argument("--scrape-interval", type=float, default=15.0, help="seconds")
    parser.add_argument("--rate-interval", help="fixed $__rate_interval, e.g. 1m")
    parser.add_argument("--dashboards", type=Path, default=dashboards.DASHBOARD_DIR)
    parser.add_argument("--out", type=Path, default=Path("docs/dashboards"))
    args = parser.parse_args(argv)
    end = args.end or time.time()
    start = args.start or end - args.last
    step = args.step or max(1.0, round((end - start) / 150))
    api = PrometheusAPI(args.prometheus)
    try:
        for path in render_all(api, start, end, args.out, step=step,
                               scrape_interval_s=args.scrape_interval,
                               directory=args.dashboards, interval=args.rate_interval):  # fmt: skip
            print(path)
    finally:
        api.close()


if __name__ == "__main__":
    main()
