"""Summaries from synthetic runs: goodput, scraped deltas, the switch under load, swap
overhead, engine spread; and the results file round trip, report and figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loadtest.tool import results
from loadtest.tool.actions import ActionRecord, StepRecord
from loadtest.tool.analysis import goodput, summarize, swap_overhead, switch
from loadtest.tool.records import COLUMNS, RequestRecord, from_rows, to_rows
from loadtest.tool.runner import RoundResult, RunResult
from loadtest.tool.scenario_files import build
from loadtest.tool.scrape import ScrapePoint, deltas, parse
from loadtest.tool.session import rerender, write_outputs
from loadtest.tool.targets import Target


def rec(start: float, total: float = 0.1, **fields: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "target": "gw",
        "round": 0,
        "seq": 0,
        "start_s": round(start, 6),  # as results.json keeps them
        "total_s": round(total, 6),
        "status": 200,
        "adapter": "bench",
        "rank": 1,
        "model": "bench",
        "stream": False,
        **fields,
    }
    return RequestRecord(**values)


METRICS = """\
# TYPE loragate_adapter_loads_total counter
loragate_adapter_loads_total{engine="e0",adapter="a"} 3
loragate_adapter_loads_total{engine="e1",adapter="a"} 2
# TYPE loragate_adapter_evictions_total counter
loragate_adapter_evictions_total{engine="e0",adapter="a"} 1
# TYPE loragate_adapter_load_seconds histogram
loragate_adapter_load_seconds_bucket{engine="e0",le="+Inf"} 5
loragate_adapter_load_seconds_sum{engine="e0"} 0.1
loragate_adapter_load_seconds_count{engine="e0"} 5
# TYPE loragate_registry_lookups_total counter
loragate_registry_lookups_total{engine="e0",result="hit"} 7
# TYPE loragate_swap_request_ratio gauge
loragate_swap_request_ratio 0.25
"""


def test_parse_sums_over_labels_and_keeps_engines_apart() -> None:
    values = parse(METRICS)
    assert values["loads"] == 5 and values["loads@e0"] == 3 and values["loads@e1"] == 2
    assert values["evictions"] == 1 and values["lookups_hit"] == 7
    assert values["load_seconds_count"] == 5 and values["swap_ratio"] == 0.25


def test_deltas_start_after_the_warmup_per_url_and_skip_gauges() -> None:
    points = [
        ScrapePoint(0.0, "u1", {"loads": 1, "resident": 2}),
        ScrapePoint(2.0, "u1", {"loads": 4, "resident": 3}),
        ScrapePoint(3.0, "u1", {"loads": 9, "resident": 4}),
        ScrapePoint(2.5, "u2", {"loads": 10}),
        ScrapePoint(3.5, "u2", {"loads": 11}),
    ]
    assert deltas(points, since_s=2.2) == {"loads": 6.0}
    assert deltas(points) == {"loads": 9.0}


def test_goodput_counts_ok_answers_inside_the_measured_window() -> None:
    records = [
        rec(0.5, 0.2),  # ends in the warm-up
        rec(1.0, 0.5),
        rec(2.0, 0.5, status=503),
        rec(3.0, 2.0),  # ends after sending stopped
        rec(3.5, 0.4),
    ]
    rnd = RoundResult("gw", 0, "now", send_s=4.0)
    assert goodput(records, rnd, warmup_s=1.0) == pytest.approx(2 / 3)


def action(start: float = 5.0, end: float = 5.2) -> ActionRecord:
    step = StepRecord("rollback", None, 200, 200.0, "switch_ms=3")
    return ActionRecord("bench", "v1", 5.0, start, end, [step])


def test_a_clean_switch() -> None:
    records = [rec(t / 10, version="bench@v2") for t in range(40, 50)]
    records += [rec(t / 10, version="bench@v1") for t in range(51, 70)]
    result = switch(run_of(records, [action()]), action(), "gw")
    assert result["failed_during_switch"] == 0 and result["old_version_after_action"] == 0
    assert result["time_to_100pct_ms"] == 0.0
    assert result["first_new_version_ms"] == pytest.approx(100.0)


def test_a_messy_switch_counts_failures_and_late_old_versions() -> None:
    records = [rec(4.9, version="bench@v2"), rec(5.05, status=503), rec(5.1, version="bench@v1")]
    records += [
        rec(5.3, version="bench@v2"),
        rec(5.4, version="bench@v1"),
        rec(5.5, version="bench@v1"),
    ]
    records += [rec(5.1, adapter="other", status=500)]
    result = switch(run_of(records, [action()]), action(), "gw")
    assert result["failed_during_switch"] == 1 and result["failed_outcomes"] == {"503": 1}
    assert result["failed_any_adapter_during_switch"] == 2
    assert result["old_version_after_action"] == 1
    assert result["time_to_100pct_ms"] == pytest.approx(300.0)
    assert result["first_new_version_ms"] == pytest.approx(100.0)


def test_a_switch_that_never_happened_has_no_time() -> None:
    records = [rec(5.5, version="bench@v2")]
    assert switch(run_of(records, [action()]), action(), "gw")["time_to_100pct_ms"] is None


def test_swap_overhead_is_cold_minus_warm_and_compares_halves() -> None:
    records = []
    for i in range(20):
        records.append(rec(i, 0.05 + (0.015 if i >= 10 else 0.0), cold=True))
        records += [rec(i + 0.1 * k, 0.01, cold=False) for k in range(1, 4)]
    found = swap_overhead(records)
    assert found is not None
    assert found["warm_mean_ms"] == pytest.approx(10.0)
    assert found["overhead_first_half_ms"] == pytest.approx(40.0)
    assert found["overhead_second_half_ms"] == pytest.approx(55.0)
    assert found["second_half_within_50pct"] is True
    assert swap_overhead([rec(0, cold=None)]) is None


def run_of(records: list[RequestRecord], actions: list[ActionRecord] | None = None) -> RunResult:
    scenario = build(
        {
            "name": "synthetic",
            "workload": {"adapters": ["bench", "other"]},
            "bounds": {"duration_s": 8, "warmup_s": 1},
        }
    )
    later = {**parse(METRICS), "loads": 9.0, "load_seconds_sum": 0.2, "load_seconds_count": 10.0}
    scrapes = [ScrapePoint(0.0, "u", parse(METRICS)), ScrapePoint(8.0, "u", later)]
    rnd = RoundResult("gw", 0, "2026-01-01T00:00:00+00:00", 8.0, 9.0, 0, scrapes, actions or [])
    return RunResult(scenario, [Target("gw", ("u",), kind="loragate")], [rnd], records, "now")


def synthetic() -> RunResult:
    records = [
        rec(
            t / 10,
            0.05 + (t % 7) / 100,
            seq=t,
            version="bench@v2" if t < 50 else "bench@v1",
            engine=f"e{t % 2}",
            ttft_s=0.02,
            stream=True,
            completion_tokens=4,
            overhead_ms=0.3,
            warmup=t < 10,
        )
        for t in range(80)
    ]
    records.append(rec(6.0, 0.01, status=503, seq=99))
    return run_of(records, [action()])


def test_summary_of_a_run() -> None:
    summary = summarize(synthetic())["targets"]["gw"]
    assert summary["requests"] == 71 and summary["ok"] == 70
    assert summary["outcomes"] == {"200": 70, "503": 1}
    assert summary["loragate"]["loads"] == 4.0 and summary["loragate"]["load_mean_ms"] == 20.0
    assert summary["engines"]["engines_per_adapter_mean"] == 2.0
    assert summary["switches"][0]["expect"] == "bench@v1"
    assert summary["ttft"]["p50_ms"] == pytest.approx(20.0)


def test_records_survive_the_columnar_form() -> None:
    run = synthetic()
    rows = to_rows(run.records)
    assert from_rows(list(COLUMNS), rows) == run.records
    assert from_rows([*COLUMNS, "future_column"], [[*row, 1] for row in rows]) == run.records


def test_outputs_are_written_and_can_be_rendered_again(tmp_path: Path) -> None:
    outcome = write_outputs(synthetic(), tmp_path / "out", results.environment("unit test"))
    names = {p.name for p in outcome.figures}
    assert names == {
        "latency_cdf.png",
        "ttft_by_rank.png",
        "throughput.png",
        "errors.png",
        "versions.png",
    }
    report = outcome.report_path.read_text()
    assert "## Switch under load" in report and "bench@v1" in report and "unit test" in report
    loaded, env = results.load(outcome.results_path)
    assert loaded.records == outcome.run.records and env["note"] == "unit test"
    assert loaded.rounds[0].actions[0].steps[0].kind == "rollback"
    again = rerender(outcome.results_path, tmp_path / "again")
    assert again.summary == outcome.summary


def test_a_foreign_json_file_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "x.json"
    other.write_text('{"tool": "something else"}')
    with pytest.raises(ValueError, match="not a loragate loadtest results file"):
        results.load(other)
