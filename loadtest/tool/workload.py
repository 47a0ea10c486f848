"""The requests of one round: adapter (or the base model), prompt, output length, streaming,
tenant key and, in open loop, the send time. Deterministic for a seed, so every target of a
round gets the same requests in the same order.

Separate random streams for times, adapters and lengths: changing the length distribution
does not change which adapters are called, nor when.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from loadtest.tool.arrivals import send_times
from loadtest.tool.popularity import Picker, TraceEvent, picker_for, read_trace
from loadtest.tool.scenario import Lengths, Scenario

_WORDS = ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "lambda")


@dataclass(frozen=True)
class RequestSpec:
    """One request to send. `rank` 0 is the base model; `cold` see `popularity.Pick`."""

    seq: int
    at_s: float | None  # open loop: seconds after the round's start; closed loop: None
    adapter: str | None  # None: the base model
    rank: int
    cold: bool | None
    prompt: str
    prompt_tokens: int
    max_tokens: int
    stream: bool
    api_key: str | None


def sample_length(lengths: Lengths, rng: random.Random) -> int:
    if lengths.kind == "fixed":
        return lengths.value
    if lengths.kind == "uniform":
        return rng.randint(lengths.min, lengths.max)
    drawn = lengths.median * math.exp(rng.gauss(0.0, lengths.sigma))
    return min(max(round(drawn), lengths.min), lengths.max)


class Workload:
    """`requests()` yields the round's `RequestSpec`s (endless in closed loop)."""

    def __init__(self, scenario: Scenario, adapters: list[str], seed: int) -> None:
        self.scenario = scenario
        spec = scenario.workload
        self._trace: list[TraceEvent] | None = None
        if spec.popularity.kind == "trace":
            assert spec.popularity.trace is not None
            self._trace = read_trace(spec.popularity.trace)
        self.picker: Picker = picker_for(spec.popularity, adapters)
        self._times_rng = random.Random(f"{seed}/times")
        self._pick_rng = random.Random(f"{seed}/adapters")
        self._size_rng = random.Random(f"{seed}/lengths")

    def requests(self) -> Iterator[RequestSpec]:
        scenario = self.scenario
        times: Iterator[float | None]
        if scenario.arrivals.open_loop:
            times = send_times(
                scenario.arrivals, self._times_rng, scenario.bounds.duration_s, self._trace
            )
        else:
            times = iter(lambda: None, 0)  # endless Nones (the sentinel never matches)
        for seq, at_s in enumerate(times):
            if scenario.bounds.requests is not None and seq >= scenario.bounds.requests:
                return
            yield self._request(seq, at_s)

    def _request(self, seq: int, at_s: float | None) -> RequestSpec:
        spec = self.scenario.workload
        base = self._pick_rng.random() < spec.base_share
        pick = None if base else self.picker.pick(self._pick_rng)
        streamed = self._pick_rng.random() < spec.stream
        key = spec.api_keys[seq % len(spec.api_keys)] if spec.api_keys else None
        prompt_tokens = sample_length(spec.prompt_tokens, self._size_rng)
        words = " ".join(self._size_rng.choice(_WORDS) for _ in range(prompt_tokens))
        return RequestSpec(
            seq=seq,
            at_s=at_s,
            adapter=pick.adapter if pick else None,
            rank=pick.rank if pick else 0,
            cold=pick.cold if pick else None,
            prompt=words,
            prompt_tokens=prompt_tokens,
            max_tokens=sample_length(spec.output_tokens, self._size_rng),
            stream=streamed,
            api_key=key,
        )
