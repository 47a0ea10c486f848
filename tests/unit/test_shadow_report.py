"""Shadow results scored and merged into the candidate's eval report
(server/releases/shadow_report.py, AdapterStore.update_eval), with a real store."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.releases.shadow_report import ShadowReports
from server.store.manifest import EvalReport
from server.store.snapshot import AdapterVersion
from server.store.store import AdapterStore
from tests.factory import add_version


@pytest.fixture
def pair(store: AdapterStore, tmp_path: Path) -> tuple[AdapterVersion, AdapterVersion]:
    stable = add_version(store, tmp_path, "s", "v1", checks={"deny_words": ["secret"]})
    candidate = add_version(store, tmp_path, "s", "v2", seed=1, checks={"deny_words": ["bad"]})
    return stable, candidate


def mirror(
    reports: ShadowReports,
    pair: tuple[AdapterVersion, AdapterVersion],
    text: str | None,
    reference: str = "the cat sat",
) -> None:
    stable, candidate = pair
    reports.record_shadow(
        candidate,
        stable,
        failed=text is None,
        latency_s=0.02,
        text=text,
        reference_text=reference,
        reference_latency_s=0.004,
    )


async def test_reports_from_two_gateways_add_up(
    store: AdapterStore, pair: tuple[AdapterVersion, AdapterVersion]
) -> None:
    stable, candidate = pair
    first, second = ShadowReports(store), ShadowReports(store)
    mirror(first, pair, "the cat sat")  # exact: F1 1
    mirror(first, pair, "the dog sat bad")  # F1 4/7, a violation of the candidate's checks
    mirror(first, pair, None, reference="a secret")  # failed: F1 0; the stable's violation
    first.dropped(candidate, stable)
    await first.flush()
    await first.flush()  # nothing new: nothing written

    report = candidate.evals()["shadow"]
    assert (report.metric, report.n, report.model) == ("token_f1", 3, "s@v2")
    assert report.score == pytest.approx((1 + 4 / 7 + 0) / 3, abs=1e-4)
    assert report.policy_violations == 1 and report.schema_errors == 0
    stats = report.shadow
    assert stats is not None
    assert (stats.reference, stats.errors, stats.dropped) == ("s@v1", 1, 1)
    assert stats.exact_match == pytest.approx(1 / 3, abs=1e-4)
    assert stats.reference_policy_violations == 1
    assert sum(stats.latency.counts) == 2 and sum(stats.reference_latency.counts) == 3
    assert stats.reference_latency.quantile(0.99) == 0.005

    mirror(second, pair, "the cat sat")
    await second.flush()
    merged = candidate.evals()["shadow"]
    assert merged.n == 4 and merged.score == pytest.approx((1 + 4 / 7 + 0 + 1) / 4, abs=1e-4)
    assert merged.shadow is not None and merged.shadow.errors == 1
    assert [e.action for e in store.audit()].count("eval") == 2


async def test_a_report_of_another_reference_is_replaced(
    store: AdapterStore, pair: tuple[AdapterVersion, AdapterVersion], tmp_path: Path
) -> None:
    _, candidate = pair
    other = add_version(store, tmp_path, "s", "v0", seed=2)
    reports = ShadowReports(store)
    reports.record_shadow(
        candidate,
        other,
        failed=False,
        latency_s=0.1,
        text="x",
        reference_text="x",
        reference_latency_s=0.1,
    )
    await reports.flush()
    mirror(reports, pair, "y")
    await reports.flush()
    report = candidate.evals()["shadow"]
    assert report.n == 1 and report.shadow is not None and report.shadow.reference == "s@v1"


async def test_drops_alone_wait_for_a_finished_mirror(
    store: AdapterStore, pair: tuple[AdapterVersion, AdapterVersion]
) -> None:
    stable, candidate = pair
    reports = ShadowReports(store)
    reports.dropped(candidate, stable)
    await reports.flush()
    assert "shadow" not in candidate.evals()
    mirror(reports, pair, "the cat sat")
    await reports.flush()
    stats = candidate.evals()["shadow"].shadow
    assert stats is not None and stats.dropped == 1


def test_update_eval_starts_from_an_unreadable_report(
    store: AdapterStore, pair: tuple[AdapterVersion, AdapterVersion]
) -> None:
    _, candidate = pair
    (candidate.path / "evals").mkdir(exist_ok=True)
    (candidate.path / "evals" / "shadow.json").write_text("{not json")
    seen: list[EvalReport | None] = []

    def change(old: EvalReport | None) -> EvalReport:
        seen.append(old)
        return EvalReport(dataset="shadow", metric="token_f1", score=0.5, n=1)

    store.update_eval("s", "v2", "shadow", change, actor="t")
    assert seen == [None] and candidate.evals()["shadow"].score == 0.5
    store.validate("s", "v2")  # the lock file is not inside the version directory
