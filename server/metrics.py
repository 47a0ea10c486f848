"""Every Prometheus metric loragate exports, defined once on an injected registry.

Label values are bounded: `adapter`/`version` come from the store (never raw client input),
`engine` from the config, `tenant` from the tenants file, `code` from HTTP statuses.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Seconds. Adapter loads are tens of ms on CPU, seconds for big adapters on a busy engine.
LOAD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Seconds. LLM requests: sub-second to minutes on CPU.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)
# Seconds. Gateway overhead: well under a millisecond to tens of ms.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class WindowCounter:
    """Counts events in the last `window_s` seconds (timestamps in a deque)."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._events: deque[float] = deque()

    def add(self) -> None:
        self._events.append(self._clock())

    def count(self) -> int:
        horizon = self._clock() - self.window_s
        while self._events and self._events[0] < horizon:
            self._events.popleft()
        return len(self._events)


class _SwapRatio(Collector):
    """`loragate_swap_request_ratio`: adapter loads per request over a sliding window."""

    def __init__(self, swaps: WindowCounter, requests: WindowCounter) -> None:
        self.swaps, self.requests = swaps, requests

    def collect(self) -> Iterator[Metric]:
        requests = self.requests.count()
        ratio = self.swaps.count() / requests if requests else 0.0
        family = GaugeMetricFamily(
            "loragate_swap_request_ratio",
            f"Adapter loads per adapter request over the last {self.swaps.window_s:g} s",
        )
        family.add_metric([], ratio)
        yield family


class _ActiveVersions(Collector):
    """`loragate_active_version_info{adapter,version,channel}` = 1, read from the store's
    current snapshot at scrape time (so it follows other gateways' and GitOps changes)."""

    def __init__(self, versions: Callable[[], Iterable[tuple[str, str, str]]]) -> None:
        self.versions = versions

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "loragate_active_version_info",
            "1 for each adapter version a release channel (stable, previous, canary) points at",
            labels=["adapter", "version", "channel"],
        )
        for adapter, version, channel in self.versions():
            family.add_metric([adapter, version, channel], 1.0)
        yield family


class Metrics:
    """The metrics of one gateway. Tests build their own on a fresh `CollectorRegistry`."""

    def __init__(self, registry: CollectorRegistry | None = None, window_s: float = 60.0) -> None:
        self.registry = r = registry or CollectorRegistry()
        # Registry: residency, swaps, thrashing.
        self.adapter_load_seconds = Histogram(
            "loragate_adapter_load_seconds",
            "Duration of the engine's adapter load call",
            ["engine"],
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.adapter_loads = Counter(
            "loragate_adapter_loads_total",
            "Adapter versions loaded onto an engine",
            ["engine", "adapter"],
            registry=r,
        )
        self.adapter_load_failures = Counter(
            "loragate_adapter_load_failures_total",
            "Adapter loads that failed or were not listed",
            ["engine", "adapter"],
            registry=r,
        )
        self.adapter_evictions = Counter(
            "loragate_adapter_evictions_total",
            "Adapter versions unloaded to free a slot",
            ["engine", "adapter"],
            registry=r,
        )
        self.adapter_thrash = Counter(
            "loragate_adapter_thrash_total",
            "Adapter versions reloaded within thrash_window_s of their eviction",
            ["adapter"],
            registry=r,
        )
        self.resident_adapters = Gauge(
            "loragate_resident_adapters",
            "Adapter versions resident on an engine",
            ["engine"],
            registry=r,
        )
        self.adapter_slots = Gauge(
            "loragate_adapter_slots",
            "Adapter slots the registry manages on an engine",
            ["engine"],
            registry=r,
        )
        self.registry_lookups = Counter(
            "loragate_registry_lookups_total",
            "Adapter acquisitions by outcome (hit or miss)",
            ["engine", "result"],
            registry=r,
        )
        self.load_wait_seconds = Histogram(
            "loragate_load_wait_seconds",
            "Time a request waited for its adapter to be resident",
            ["engine"],
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        # Scale-out: several gateways over shared engines; pins and fairness (#13, #12.6).
        self.adapter_already_loaded = Counter(
            "loragate_adapter_already_loaded_total",
            "Loads the engine answered 'already loaded' (another gateway loaded it): hits",
            ["engine"],
            registry=r,
        )
        self.adapter_gone_retries = Counter(
            "loragate_adapter_gone_retries_total",
            "Requests retried once after the engine answered 404 for a version another "
            "gateway had just unloaded",
            ["engine"],
            registry=r,
        )
        self.slot_drains = Counter(
            "loragate_slot_drains_total",
            "Busy slots drained (no new requests, evicted when idle) for a waiting request",
            ["engine"],
            registry=r,
        )
        self.slot_waiting_requests = Gauge(
            "loragate_slot_waiting_requests",
            "Requests waiting for an adapter slot on an engine",
            ["engine"],
            registry=r,
        )
        self.slot_refusals = Counter(
            "loragate_slot_refusals_total",
            "Requests refused (503) for lack of a slot; reason=pinned when an idle pinned "
            "slot held the room (pins crowd out traffic), busy otherwise",
            ["engine", "reason"],
            registry=r,
        )
        self.pinned_versions = Gauge(
            "loragate_pinned_versions", "Versions kept warm on every engine (pins)", registry=r
        )
        self.pins_over_budget = Gauge(
            "loragate_pins_over_budget",
            "Versions that would be pinned but exceed max_pinned_share of the slots",
            registry=r,
        )
        self.swaps = WindowCounter(window_s)
        self.adapter_requests = WindowCounter(window_s)
        r.register(_SwapRatio(self.swaps, self.adapter_requests))
        # Requests.
        self.requests = Counter(
            "loragate_requests_total",
            "Requests answered, by adapter, version, tenant, status",
            ["adapter", "version", "tenant", "code"],
            registry=r,
        )
        self.request_duration_seconds = Histogram(
            "loragate_request_duration_seconds",
            "Time from request to the last byte",
            ["adapter", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.time_to_first_token_seconds = Histogram(
            "loragate_time_to_first_token_seconds",
            "Time from request to the first streamed byte",
            ["adapter"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "loragate_tokens_total",
            "Tokens reported by the engine's usage fields",
            ["adapter", "kind"],
            registry=r,
        )
        self.gateway_overhead_seconds = Histogram(
            "loragate_gateway_overhead_seconds",
            "A proxied request's time in the gateway, first byte in to last byte out, minus "
            "its waits on engines (adapter loads, admission, generation)",
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.inflight_requests = Gauge(
            "loragate_inflight_requests", "Requests in flight to an engine", ["engine"], registry=r
        )
        # Admission (server/engines/admission.py).
        self.requests_shed = Counter(
            "loragate_requests_shed_total",
            "Requests refused with 503 because an engine's admission queue was full",
            ["engine"],
            registry=r,
        )
        self.admission_limit = Gauge(
            "loragate_admission_limit",
            "Requests this gateway sends to an engine at once (learned from its queue)",
            ["engine"],
            registry=r,
        )
        self.admission_waiting = Gauge(
            "loragate_admission_waiting",
            "Requests waiting in this gateway for one of an engine's slots",
            ["engine"],
            registry=r,
        )
        self.engine_restarts = Counter(
            "loragate_engine_restarts_total",
            "Managed engine processes that exited and restarted",
            ["engine"],
            registry=r,
        )
        self.engine_up = Gauge(
            "loragate_engine_up",
            "1 if the engine answered its last health check",
            ["engine"],
            registry=r,
        )
        # Releases.
        self.promotions = Counter(
            "loragate_promotions_total",
            "Versions promoted to stable (forced: past the eval gate)",
            ["adapter", "forced"],
            registry=r,
        )
        self.rollbacks = Counter(
            "loragate_rollbacks_total",
            "Rollbacks of stable to the previous version",
            ["adapter"],
            registry=r,
        )

        # Safe rollout (server/releases/canary_controller.py, server/serving/shadow.py).
        self.canary_rollbacks = Counter(
            "loragate_canary_rollbacks_total",
            "Canaries this gateway set to weight 0 by itself, by the bound they broke "
            "(error_rate, latency, violations; gate: promotion refused after the last step)",
            ["adapter", "reason"],
            registry=r,
        )
        self.canary_steps = Counter(
            "loragate_canary_steps_total",
            "Progressive canary steps this gateway advanced (the promotion after 100 % included)",
            ["adapter"],
            registry=r,
        )
        self.shadow_requests = Counter(
            "loragate_shadow_requests_total",
            "Requests mirrored to a shadow candidate, by outcome (answered, failed, "
            "dropped_limit, dropped_busy, dropped_cold)",
            ["adapter", "outcome"],
            registry=r,
        )
        self.first_request_extra_seconds = Histogram(
            "loragate_adapter_first_request_extra_seconds",
            "Engine time of the first request after an adapter load, over a resident "
            "request's (running mean); measure: first_byte (streams) or total",
            ["engine", "measure"],
            buckets=LOAD_BUCKETS,
            registry=r,
        )

    def track_versions(self, versions: Callable[[], Iterable[tuple[str, str, str]]]) -> None:
        """Export `loragate_active_version_info` from (adapter, version, channel) triples."""
        self.registry.register(_ActiveVersions(versions))
