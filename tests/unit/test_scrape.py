"""Parsing what an engine reports on /metrics: table-driven over vLLM-shaped texts."""

from __future__ import annotations

import pytest

from server.engines.scrape import EngineLoad, parse_engine_metrics

HELP = """# HELP vllm:lora_requests_info Running stats on lora requests.
# TYPE vllm:lora_requests_info gauge
"""
# vLLM keeps old label sets; the newest timestamp is the current one.
TWO_SETS = (
    HELP + 'vllm:lora_requests_info{max_lora="2",running_lora_adapters="a@v1,b@v2",'
    'waiting_lora_adapters="a@v1,b@v2"} 1.7e+09\n'
    + 'vllm:lora_requests_info{max_lora="2",running_lora_adapters="c@v1",'
    'waiting_lora_adapters="d@v3"} 1.7000001e+09\n'
)
RUNNING = 'vllm:num_requests_running{engine="0",model_name="base"} 3.0\n'
WAITING = 'vllm:num_requests_waiting{engine="0",model_name="base"} 1.0\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", EngineLoad()),
        (RUNNING + WAITING, EngineLoad(running=3, waiting=1)),
        (TWO_SETS + RUNNING, EngineLoad(3, 0, frozenset({"c@v1", "d@v3"}), 2)),
        # Data parallel: one sample per engine index, summed.
        (RUNNING + RUNNING.replace('"0"', '"1"'), EngineLoad(running=6)),
        # Idle engine: an old label set naming adapters is not current.
        (TWO_SETS, EngineLoad(0, 0, frozenset(), 2)),
        # Label order differs between prometheus_client versions; no labels at all works too.
        (
            'vllm:lora_requests_info{waiting_lora_adapters="",running_lora_adapters="x@v1",'
            'max_lora="4"} 5\nvllm:num_requests_running 1\n',
            EngineLoad(1, 0, frozenset({"x@v1"}), 4),
        ),
        ('vllm:num_requests_running{engine="0"} NaN\n', EngineLoad()),
        # A broken exporter: negative gauges count as none (the admission queue divides by
        # running + waiting).
        ("vllm:num_requests_running -3\n" + WAITING, EngineLoad(running=0, waiting=1)),
    ],
    ids=[
        "empty",
        "counts",
        "newest-set",
        "data-parallel",
        "idle",
        "label-order",
        "nan",
        "negative",
    ],
)
def test_parse_engine_metrics(text: str, expected: EngineLoad) -> None:
    assert parse_engine_metrics(text) == expected


def test_a_large_exposition_is_parsed_quickly() -> None:
    import time

    histograms = "".join(
        f'vllm:e2e_request_latency_seconds_bucket{{le="{i}",model_name="m"}} {i}\n'
        for i in range(20_000)
    )
    start = time.perf_counter()
    load = parse_engine_metrics(histograms + TWO_SETS + RUNNING)
    assert load.busy_loras == {"c@v1", "d@v3"}
    assert time.perf_counter() - start < 0.05  # ~1 MB of text; vLLM's is ~100-200 kB
