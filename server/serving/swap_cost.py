"""What a swap costs the first request after it, per engine: the second tier of swap latency.

The first tier is the engine's load call (disk → host memory), timed by the registry as
`loragate_adapter_load_seconds`. The second is paid by the first request served after the
load, when the engine moves the adapter into one of its device slots (host → device, vLLM's
`--max-loras`): `loragate_adapter_first_request_extra_seconds{engine, measure}` is that
request's engine time minus the running mean of resident requests' engine time on the same
engine (clamped at 0). `measure` is `first_byte` for streams (time to the engine's first byte:
the cleaner figure) and `total` for whole answers (which also vary with their length).

A request is a first request when its version was not resident on the engine before its
lease (it waited for the load) or this gateway has not sent that version to that engine yet
(a prewarmed version). A version another replica loaded counts once per gateway.
"""

from __future__ import annotations

from server.engines.registry import Registry
from server.metrics import Metrics
from server.store.snapshot import AdapterVersion

EWMA_WEIGHT = 0.05  # of each resident request's time in the running mean
MAX_SERVED = 100_000  # (engine, version) pairs remembered; forgotten all at once past this


class SwapCost:
    """Tracks first requests and observes their extra time."""

    def __init__(self, registry: Registry, metrics: Metrics) -> None:
        self.registry = registry
        self.metrics = metrics
        self._served: set[tuple[str, str]] = set()
        self._mean_s: dict[tuple[str, str], float] = {}  # (engine, measure) -> seconds

    def resident_on(self, version: AdapterVersion | None) -> frozenset[str]:
        """The engines holding `version` now (call before the lease)."""
        if version is None:
            return frozenset()
        key = version.engine_name
        return frozenset(e for e in self.registry.engines if self.registry.holds(e, key))

    def observe(
        self,
        engine: str,
        version: AdapterVersion | None,
        resident_before: frozenset[str],
        seconds: float,
        streamed: bool,
    ) -> None:
        """One successful engine call of `seconds` (first byte, or whole answer)."""
        if version is None:
            return
        measure = "first_byte" if streamed else "total"
        pair, mean_key = (engine, version.engine_name), (engine, measure)
        first = engine not in resident_before or pair not in self._served
        if len(self._served) >= MAX_SERVED:
            self._served.clear()
        self._served.add(pair)
        mean = self._mean_s.get(mean_key)
        if not first:
            self._mean_s[mean_key] = (
                seconds if mean is None else mean + EWMA_WEIGHT * (seconds - mean)
            )
        elif mean is not None:
            extra = max(0.0, seconds - mean)
            self.metrics.first_request_extra_seconds.labels(engine, measure).observe(extra)
