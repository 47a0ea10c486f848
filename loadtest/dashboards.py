"""The Grafana dashboards of deploy/grafana/dashboards as data: panels, queries, variables, and
the structural check every dashboard must pass.

Used by tests/unit/test_dashboards.py (the structural check), the slow test that runs every
query in a real Prometheus (tests/integration/test_observability.py) and
`loadtest.render_dashboards` (PNGs from real query results).

The structural check (`problems`), rule by rule:
  - the dashboard has a uid, a title, a schemaVersion, `time`, `templating.list` and `panels`;
  - every panel has an integer `id` unique in the dashboard, a non-empty `title` unique in the
    dashboard, and a `gridPos` {x, y, w, h} inside Grafana's 24-column grid; panels do not
    overlap;
  - every panel except rows has the provisioned Prometheus data source (uid
    `loragate-prometheus`) on the panel and on each target, at least one target, and each
    target a unique `refId` and a non-empty `expr`;
  - a unit where Grafana shows one: `fieldConfig.defaults.unit` for timeseries, stat, gauge and
    bargauge panels, `options.yAxis.unit` for heatmaps (tables show labels and are exempt);
  - every `$variable` a query uses is a dashboard variable or one of Grafana's built-ins;
  - every annotation query (other than Grafana's built-in one) has the data source and an expr.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Json = dict[str, Any]

REPO = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = REPO / "deploy" / "grafana" / "dashboards"
DATASOURCE_UID = "loragate-prometheus"
GRID_WIDTH = 24
UNIT_IN_DEFAULTS = frozenset({"timeseries", "stat", "gauge", "bargauge"})
BUILTIN_VARIABLES = frozenset({"__rate_interval", "__interval", "__range", "__interval_ms"})
# `$name`, `${name}`, `${name:format}` and the old `[[name]]`.
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


@dataclass(frozen=True)
class Query:
    """One PromQL query of a dashboard: a panel target or an annotation."""

    dashboard: str  # the dashboard's uid
    panel: str  # the panel's title, or "annotation: <name>"
    ref_id: str
    expr: str
    instant: bool
    kind: Literal["panel", "annotation"]

    @property
    def id(self) -> str:
        return f"{self.dashboard}/{self.panel}/{self.ref_id}"


def load(directory: Path = DASHBOARD_DIR) -> dict[str, Json]:
    """Every dashboard in `directory`, by file stem (fleet, swaps, releases)."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))}


def panels(dashboard: Json) -> Iterator[Json]:
    """Every panel, rows included, and the panels inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: Json) -> list[Query]:
    """Panel targets first (in panel order), then annotation queries."""
    uid = dashboard["uid"]
    found = [
        Query(uid, panel["title"], target["refId"], target["expr"],
              bool(target.get("instant")) and not target.get("range"), "panel")
        for panel in panels(dashboard) if panel.get("type") != "row"
        for target in panel.get("targets", [])
    ]  # fmt: skip
    for item in dashboard.get("annotations", {}).get("list", []):
        if not item.get("builtIn"):
            found.append(Query(uid, f"annotation: {item['name']}", "A", item["expr"], False,
                               "annotation"))  # fmt: skip
    return found


def unit(panel: Json) -> str | None:
    """The unit Grafana shows for a panel's values (None for tables and rows)."""
    if panel.get("type") == "heatmap":
        unit_: str | None = panel.get("options", {}).get("yAxis", {}).get("unit")
        return unit_
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    return defaults.get("unit") if panel.get("type") in UNIT_IN_DEFAULTS else None


def variables_used(expr: str) -> set[str]:
    return {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(expr)}


def expand(
    expr: str,
    values: Mapping[str, str] | None = None,
    *,
    rate_interval: str = "1m",
    interval: str = "15s",
    range_: str = "1h",
) -> str:
    """`expr` with Grafana's variables replaced as Grafana would: built-ins from the arguments,
    dashboard variables from `values` (default `.*`, the "All" of our multi-value variables)."""
    builtins = {"__rate_interval": rate_interval, "__interval": interval, "__range": range_,
                "__interval_ms": "15000"}  # fmt: skip
    chosen = {**builtins, **(values or {})}

    def replace(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        return chosen.get(name, ".*")

    return _VARIABLE.sub(replace, expr)


def problems(dashboard: Json) -> list[str]:
    """Everything the structural check (module docstring) finds wrong; empty when it passes."""
    found: list[str] = []
    for key in ("uid", "title", "schemaVersion", "time", "panels"):
        if not dashboard.get(key):
            found.append(f"dashboard: missing {key!r}")
    defined = {v.get("name") for v in dashboard.get("templating", {}).get("list", [])}
    seen_ids: set[Any] = set()
    seen_titles: set[str] = set()
    boxes: list[tuple[str, int, int, int, int]] = []
    for panel in panels(dashboard):
        title = panel.get("title") or ""
        where = f"panel {panel.get('id')} {title!r}"
        if not isinstance(panel.get("id"), int) or panel["id"] in seen_ids:
            found.append(f"{where}: id missing, not an integer, or not unique")
        seen_ids.add(panel.get("id"))
        if not title.strip() or title in seen_titles:
            found.append(f"{where}: title missing or not unique")
        seen_titles.add(title)
        found += _grid_problems(where, panel, boxes)
        if panel.get("type") != "row":
            found += _panel_problems(where, panel, defined)
    for item in dashboard.get("annotations", {}).get("list", []):
        if item.get("builtIn"):
            continue
        where = f"annotation {item.get('name')!r}"
        if (item.get("datasource") or {}).get("uid") != DATASOURCE_UID:
            found.append(f"{where}: data source is not {DATASOURCE_UID}")
        if not str(item.get("expr", "")).strip():
            found.append(f"{where}: no expr")
        unknown = variables_used(item.get("expr", "")) - defined - BUILTIN_VARIABLES
        found += [f"{where}: undefined variable ${name}" for name in sorted(unknown)]
    return found


def _grid_problems(
    where: str, panel: Json, boxes: list[tuple[str, int, int, int, int]]
) -> list[str]:
    grid = panel.get("gridPos") or {}
    if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")):
        return [f"{where}: gridPos needs integer x, y, w, h"]
    x, y, w, h = grid["x"], grid["y"], grid["w"], grid["h"]
    found = []
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > GRID_WIDTH:
        found.append(f"{where}: gridPos {grid} outside the {GRID_WIDTH}-column grid")
    for other, ox, oy, ow, oh in boxes:
        if x < ox + ow and ox < x + w and y < oy + oh and oy < y + h:
            found.append(f"{where}: overlaps {other}")
    boxes.append((where, x, y, w, h))
    return found


def _panel_problems(where: str, panel: Json, defined: set[Any]) -> list[str]:
    found = []
    if (panel.get("datasource") or {}).get("uid") != DATASOURCE_UID:
        found.append(f"{where}: data source is not {DATASOURCE_UID}")
    targets = panel.get("targets") or []
    if not targets:
        found.append(f"{where}: no targets")
    ref_ids = [t.get("refId") for t in targets]
    if len(set(ref_ids)) != len(ref_ids) or not all(ref_ids):
        found.append(f"{where}: refIds missing or repeated")
    for target in targets:
        if (target.get("datasource") or {}).get("uid") != DATASOURCE_UID:
            found.append(f"{where} {target.get('refId')}: data source is not {DATASOURCE_UID}")
        expr = str(target.get("expr", ""))
        if not expr.strip():
            found.append(f"{where} {target.get('refId')}: no expr")
        for name in sorted(variables_used(expr) - defined - BUILTIN_VARIABLES):
            found.append(f"{where} {target.get('refId')}: undefined variable ${name}")
    kind = panel.get("type")
    if (kind in UNIT_IN_DEFAULTS or kind == "heatmap") and not unit(panel):
        found.append(f"{where}: no unit")
    return found
