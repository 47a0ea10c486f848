"""loadtest/render_dashboards.py against a fake Prometheus (httpx.MockTransport): every panel
kind renders, units format as Grafana shows them, and a query error is not swallowed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from loadtest import dashboards
from loadtest.promapi import PrometheusAPI, PrometheusError, Series
from loadtest.render_dashboards import format_value, rate_interval, render_all

START, END, STEP = 1_700_000_000.0, 1_700_000_120.0, 10.0


def fake_prometheus(request: httpx.Request) -> httpx.Response:
    """Two series per query; `le` buckets for heatmaps; labels for tables."""
    form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
    expr = form.get("query", "")
    if "syntax error" in expr:
        body = {"status": "error", "errorType": "bad_data", "error": "parse error"}
        return httpx.Response(400, json=body)
    labels = [{"adapter": "alpha", "engine": "engine-0", "le": "0.05", "channel": "stable",
               "version": "v1", "instance": "e:8000"},
              {"adapter": "beta", "engine": "engine-1", "le": "+Inf", "channel": "canary",
               "version": "v2", "instance": "f:8000"}]  # fmt: skip
    if request.url.path.endswith("query_range"):
        times = [START + i * STEP for i in range(13)]
        result = [{"metric": m, "values": [[t, str(0.1 * (i + 1) * (1 + k))]
                                           for k, t in enumerate(times)]}
                  for i, m in enumerate(labels)]  # fmt: skip
        return httpx.Response(200, json={"status": "success",
                                         "data": {"resultType": "matrix", "result": result}})  # fmt: skip
    vector: list[dict[str, object]] = [{"metric": m, "value": [END, "0.25"]} for m in labels]
    return httpx.Response(200, json={"status": "success",
                                     "data": {"resultType": "vector", "result": vector}})  # fmt: skip


@pytest.fixture
def api() -> PrometheusAPI:
    client = httpx.Client(transport=httpx.MockTransport(fake_prometheus))
    return PrometheusAPI("http://prometheus.test", client=client)


def test_renders_one_png_per_dashboard(api: PrometheusAPI, tmp_path: Path) -> None:
    written = render_all(api, START, END, tmp_path, step=STEP, scrape_interval_s=15)
    assert sorted(p.name for p in written) == sorted(f"{n}.png" for n in dashboards.load())
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 50_000  # panels were drawn, not an empty canvas


def test_query_errors_surface(api: PrometheusAPI) -> None:
    with pytest.raises(PrometheusError, match="bad_data: parse error"):
        api.query("syntax error(")


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [(0.0004, "s", "400 µs"), (0.25, "s", "250 ms"), (12.5, "s", "12.5 s"), (600, "s", "10 min"),
     (0.173, "percentunit", "17.3%"), (19.3, "reqps", "19.3 req/s"), (2500, "short", "2.5 K"),
     (41.0, "suffix: tok/s", "41 tok/s"), (3.0, "ops", "3 ops/s"), (math.nan, "s", "NaN")],
)  # fmt: skip
def test_format_value(value: float, unit: str, shown: str) -> None:
    assert format_value(value, unit) == shown


def test_rate_interval_is_grafanas() -> None:
    assert rate_interval(step_s=2, scrape_interval_s=1) == "4s"
    assert rate_interval(step_s=60, scrape_interval_s=15) == "75s"


def test_legend_format() -> None:
    series = Series({"adapter": "alpha", "version": "v2"})
    assert series.legend("{{adapter}}@{{version}}") == "alpha@v2"
    assert series.legend("{{adapter}} {{channel}}") == "alpha"
    assert series.legend("{{code}}") == "adapter=alpha, version=v2"
    assert series.legend("__auto") == "adapter=alpha, version=v2"
    assert json.dumps(series.points) == "[]"
