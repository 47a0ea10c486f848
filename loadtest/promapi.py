"""A small synchronous client for Prometheus's HTTP API (/api/v1): instant and range queries,
alerts, rules, targets. Used by the dashboard renderer and the observability tests."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import httpx


class PrometheusError(RuntimeError):
    """Raised when Prometheus answers a query with an error (bad PromQL, timeout, …)."""


@dataclass
class Series:
    """One result series: its labels and (unix seconds, value) points (NaN kept as NaN)."""

    labels: dict[str, str]
    points: list[tuple[float, float]] = field(default_factory=list)

    def last(self) -> float:
        return self.points[-1][1] if self.points else math.nan

    def legend(self, template: str) -> str:
        """Grafana's legendFormat: `{{label}}` replaced by the label's value."""
        if not template or template == "__auto":
            shown = {k: v for k, v in self.labels.items() if k != "__name__"}
            return ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) or "value"
        text = template
        for key, value in self.labels.items():
            text = text.replace("{{" + key + "}}", value).replace("{{ " + key + " }}", value)
        # Labels the series does not have render as empty, as in Grafana.
        while "{{" in text and "}}" in text.split("{{", 1)[1]:
            head, rest = text.split("{{", 1)
            text = head + rest.split("}}", 1)[1]
        return text.strip() or self.legend("__auto")


class PrometheusAPI:
    """Prometheus at `url` (e.g. http://127.0.0.1:9090)."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, client: httpx.Client | None = None):
        self.url = url.rstrip("/")
        self._client = client or httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self._client.close()

    def _get(self, path: str, **params: Any) -> Any:
        response = self._client.post(f"{self.url}/api/v1/{path}", data=params)
        try:
            body = response.json()
        except ValueError:
            detail = f"{path}: HTTP {response.status_code}: {response.text[:200]}"
            raise PrometheusError(detail) from None
        if body.get("status") != "success":
            raise PrometheusError(f"{path}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[Series]:
        """Instant query (at `at`, unix seconds; default now)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("query", **params)
        if data["resultType"] == "scalar":
            t, v = data["result"]
            return [Series({}, [(float(t), float(v))])]
        return [
            Series(r["metric"], [(float(r["value"][0]), float(r["value"][1]))])
            for r in data["result"]
        ]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        data = self._get(
            "query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}"
        )
        return [
            Series(r["metric"], [(float(t), float(v)) for t, v in r["values"]])
            for r in data["result"]
        ]

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing)."""
        response = self._client.get(f"{self.url}/api/v1/alerts")
        alerts: list[dict[str, Any]] = response.json()["data"]["alerts"]
        return alerts

    def firing(self) -> set[str]:
        return {a["labels"]["alertname"] for a in self.alerts() if a["state"] == "firing"}

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule (recording and alerting), with its health and last error."""
        response = self._client.get(f"{self.url}/api/v1/rules")
        return [rule for group in response.json()["data"]["groups"] for rule in group["rules"]]

    def targets(self) -> list[dict[str, Any]]:
        response = self._client.get(f"{self.url}/api/v1/targets")
        targets: list[dict[str, Any]] = response.json()["data"]["activeTargets"]
        return targets
