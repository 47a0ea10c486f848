"""Prometheus exposition for one simulated engine, on its own CollectorRegistry.

A collector reads the engine's state at scrape time, so counts live in one place
(`SimEngine.stats`). vLLM metric names, help texts and labels follow
vllm/v1/metrics/loggers.py (PrometheusStatLogger); `sim_*` metrics are ours.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from loadtest.sim.engine import SimEngine


class SimCollector(Collector):
    def __init__(self, engine: SimEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterable[Metric]:
        yield from self._vllm_metrics()
        yield from self._sim_counters()

    def _vllm_metrics(self) -> Iterable[Metric]:
        engine = self._engine
        labels = ["model_name", "engine"]
        values = [engine.config.model, "0"]
        running = GaugeMetricFamily(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            labels=labels,
        )
        running.add_metric(values, engine.scheduler.num_running)
        waiting = GaugeMetricFamily(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            labels=labels,
        )
        waiting.add_metric(values, engine.scheduler.num_waiting)
        lora_info = GaugeMetricFamily(
            "vllm:lora_requests_info",
            "Running stats on lora requests.",
            labels=["max_lora", "waiting_lora_adapters", "running_lora_adapters"],
        )
        max_lora = str(engine.config.max_loras)
        for (waiting_names, running_names), stamp in engine.stats.lora_info.items():
            lora_info.add_metric([max_lora, waiting_names, running_names], stamp)
        return [running, waiting, lora_info]

    def _sim_counters(self) -> Iterable[Metric]:
        stats = self._engine.stats
        simple = [
            ("sim_lora_loads", "Adapters registered via /v1/load_lora_adapter.", stats.loads),
            ("sim_lora_load_failures", "Load requests that failed.", stats.load_failures),
            ("sim_lora_unloads", "Adapters unregistered.", stats.unloads),
            (
                "sim_lora_cpu_cache_reloads",
                "Hidden reloads: a registered adapter outside the CPU LRU was read again.",
                stats.cpu_cache_reloads,
            ),
            (
                "sim_lora_cpu_cache_evictions",
                "Adapters evicted from the CPU LRU.",
                stats.cpu_cache_evictions,
            ),
            (
                "sim_requests_cancelled",
                "Requests abandoned by their client.",
                stats.requests_cancelled,
            ),
            ("sim_requests_failed", "Requests failed by an injected fault.", stats.requests_failed),
        ]
        for name, documentation, value in simple:
            yield CounterMetricFamily(name, documentation, value=value)
        per_model = CounterMetricFamily(
            "sim_requests", "Completion requests accepted, by served model.", labels=["model"]
        )
        for model, value in sorted(stats.requests.items()):
            per_model.add_metric([model], value)
        yield per_model


def build_registry(engine: SimEngine) -> CollectorRegistry:
    """A fresh registry holding only this engine's metrics (never the global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SimCollector(engine))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
