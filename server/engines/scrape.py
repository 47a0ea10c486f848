"""What the gateway reads from a vLLM engine's Prometheus `/metrics`: a pure function.

Three families matter (vllm/v1/metrics/loggers.py, PrometheusStatLogger):
- `vllm:num_requests_running` and `vllm:num_requests_waiting`: one sample per engine index
  (data parallel); summed.
- `vllm:lora_requests_info{max_lora, waiting_lora_adapters, running_lora_adapters}`: the value
  is the unix time the label set was last set (`set_to_current_time()` each step), and old
  label sets stay exported, so only the sample with the newest time is current. In vLLM 0.32
  both lists name every LoRA with an unfinished request (`LoRARequestStates` keys); older
  versions split them. Either way a name in either list is busy on the engine.

The text is scanned line by line for those names only (a vLLM `/metrics` is ~100-200 kB of
histograms), so parsing stays well under a millisecond on the event loop.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_LORA_INFO = "vllm:lora_requests_info{"
_RUNNING = "vllm:num_requests_running"
_WAITING = "vllm:num_requests_waiting"
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class EngineLoad:
    """Requests on one engine, from all gateways, as the engine last reported them."""

    running: int = 0
    waiting: int = 0
    busy_loras: frozenset[str] = frozenset()  # LoRA names with a running or waiting request
    max_loras: int | None = None  # vLLM --max-loras, when the engine reports it

    @property
    def requests(self) -> int:
        return self.running + self.waiting


def parse_engine_metrics(text: str) -> EngineLoad:
    """The `EngineLoad` in a Prometheus text exposition; absent families count as zero.

    When the engine reports no request running or waiting, no LoRA is busy, whatever an old
    `lora_requests_info` label set says (vLLM only refreshes it while it steps)."""
    running = waiting = 0.0
    newest = float("-inf")
    info: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        if line.startswith(_LORA_INFO):
            labels, value = _sample(line)
            if value >= newest:
                newest, info = value, labels
        elif line.startswith(_RUNNING):
            running += _sample(line)[1]
        elif line.startswith(_WAITING):
            waiting += _sample(line)[1]
    busy: frozenset[str] = frozenset()
    if running + waiting > 0:
        names = info.get("running_lora_adapters", "") + "," + info.get("waiting_lora_adapters", "")
        busy = frozenset(n for n in names.split(",") if n)
    max_loras = info.get("max_lora")
    return EngineLoad(
        running=max(0, int(running)),  # a negative count is nonsense: none
        waiting=max(0, int(waiting)),
        busy_loras=busy,
        max_loras=int(max_loras) if max_loras and max_loras.isdigit() else None,
    )


def _sample(line: str) -> tuple[dict[str, str], float]:
    """Labels and value of one exposition line (`name{labels} value [timestamp]`)."""
    head, _, rest = line.rpartition("}")
    if not head:  # no labels: `name value`
        head, rest = "", line.split(None, 1)[1] if " " in line else "0"
    try:
        value = float(rest.split()[0])
    except (IndexError, ValueError):
        value = 0.0
    if not math.isfinite(value):
        value = 0.0
    return {k: v.replace('\\"', '"') for k, v in _LABEL.findall(head)}, value
