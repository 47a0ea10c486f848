"""The eval gate, table-driven over real eval reports written beside real versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.releases.gate import evaluate_gate, gate_dataset
from server.store.manifest import EvalReport
from server.store.rollout import ShadowStats
from server.store.store import AdapterStore
from tests.factory import add_version


def report(score: float, dataset: str = "heldout", **kw: Any) -> EvalReport:
    return EvalReport(
        dataset=dataset, metric=kw.pop("metric", "exact_match"), score=score, n=50, **kw
    )


# (case, stable's evals (None: no stable), candidate's evals, requested dataset,
#  passes, fragments of the reason)
CASES: list[tuple[str, list[EvalReport] | None, list[EvalReport], str | None, bool, list[str]]] = [
    (
        "better",
        [report(0.70)],
        [report(0.80)],
        None,
        True,
        ["exact_match=0.8000 on 'heldout' beats stable v1's 0.7000", "policy_violations 0 <= 0"],
    ),
    ("equal-is-not-better", [report(0.70)], [report(0.70)], None, False, ["does not beat"]),
    ("worse", [report(0.80)], [report(0.71)], None, False, ["0.7100", "0.8000"]),
    (
        "more-policy-violations",
        [report(0.7, policy_violations=1)],
        [report(0.9, policy_violations=2)],
        None,
        False,
        ["policy_violations 2 > 1"],
    ),
    (
        "more-schema-errors",
        [report(0.7)],
        [report(0.9, schema_errors=3)],
        None,
        False,
        ["schema_errors 3 > 0"],
    ),
    (
        "candidate-has-no-eval-there",
        [report(0.7)],
        [report(0.9, dataset="other")],
        "heldout",
        False,
        ["has no eval on gate dataset 'heldout'"],
    ),
    ("candidate-has-no-eval", [report(0.7)], [], "heldout", False, ["has no eval on gate"]),
    (
        "stable-has-no-eval-there",
        [report(0.7, dataset="other")],
        [report(0.9)],
        None,
        False,
        ["stable s@v1 has no eval on 'heldout'"],
    ),
    (
        "metrics-differ",
        [report(0.7, metric="rouge_l")],
        [report(0.9)],
        None,
        False,
        ["reports exact_match", "reports rouge_l"],
    ),
    (
        "requested-dataset-wins",
        [report(0.9), report(0.5, dataset="b")],
        [report(0.1), report(0.6, dataset="b")],
        "b",
        True,
        ["on 'b' beats"],
    ),
    (
        "no-stable-beats-baseline",
        None,
        [report(0.6, baseline_score=0.5)],
        None,
        True,
        ["beats baseline's 0.5000"],
    ),
    (
        "no-stable-below-baseline",
        None,
        [report(0.4, baseline_score=0.5)],
        None,
        False,
        ["does not beat baseline's 0.5000"],
    ),
    ("no-stable-no-baseline", None, [report(0.9)], None, False, ["no baseline_score"]),
    (
        "baseline-ignores-violation-counts",
        None,
        [report(0.6, baseline_score=0.5, policy_violations=4)],
        None,
        True,
        ["baseline"],
    ),
    (
        "no-gate-dataset",
        None,
        [report(0.6, baseline_score=0.1), report(0.6, dataset="b")],
        None,
        False,
        ["no gate dataset", "[b, heldout]"],
    ),
]


@pytest.mark.parametrize(
    ("case", "stable_evals", "candidate_evals", "requested", "passes", "fragments"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_gate(
    store: AdapterStore,
    tmp_path: Path,
    case: str,
    stable_evals: list[EvalReport] | None,
    candidate_evals: list[EvalReport],
    requested: str | None,
    passes: bool,
    fragments: list[str],
) -> None:
    stable = add_version(store, tmp_path, "s", "v1") if stable_evals is not None else None
    candidate = add_version(store, tmp_path, "s", "v2", seed=1)
    for r in stable_evals or []:
        store.add_eval("s", "v1", r, actor="ci")
    for r in candidate_evals:
        store.add_eval("s", "v2", r, actor="ci")

    result = evaluate_gate(candidate, stable, requested)

    assert result.passed is passes, result.reason
    for fragment in fragments:
        assert fragment in result.reason


def test_gate_dataset_comes_from_the_stables_packaging_eval(
    store: AdapterStore, tmp_path: Path
) -> None:
    packaged = report(0.7, dataset="pkg").model_dump()
    stable = add_version(store, tmp_path, "s", "v1", eval=packaged)
    candidate = add_version(store, tmp_path, "s", "v2", seed=1)
    store.add_eval("s", "v2", report(0.1, dataset="zzz"), actor="ci")
    store.add_eval("s", "v2", report(0.8, dataset="pkg"), actor="ci")

    assert gate_dataset(candidate.evals(), stable, None) == "pkg"
    assert gate_dataset(candidate.evals(), stable, "zzz") == "zzz"
    result = evaluate_gate(candidate, stable)
    assert (result.passed, result.dataset, result.candidate_score, result.reference_score) == (
        True,
        "pkg",
        0.8,
        0.7,
    )


def shadow_report(
    violations: int = 0, reference_violations: int = 0, errors: int = 0, reference: str = "s@v1"
) -> EvalReport:
    stats = ShadowStats(
        reference=reference,
        exact_match=0.5,
        errors=errors,
        reference_policy_violations=reference_violations,
    )
    return EvalReport(
        dataset="shadow",
        metric="token_f1",
        score=0.8,
        n=200,
        policy_violations=violations,
        shadow=stats,
    )


# (case, candidate's shadow report, its other evals, requested, passes, fragments)
SHADOW_CASES: list[tuple[str, EvalReport, list[EvalReport], str | None, bool, list[str]]] = [
    ("alone-clean", shadow_report(), [], None, True, ["shadow vs s@v1 on 200", "errors 0"]),
    (
        "alone-more-violations",
        shadow_report(violations=3, reference_violations=1),
        [],
        "shadow",
        False,
        ["policy_violations 3 > stable's 1"],
    ),
    ("alone-errors", shadow_report(errors=3), [], None, False, ["errors 3 (1.5% > 1%)"]),
    (
        "of-another-stable",
        shadow_report(reference="s@v0"),
        [],
        "shadow",
        False,
        ["no shadow report against the current stable"],
    ),
    ("beside-quality-both-pass", shadow_report(), [report(0.8)], None, True, ["beats", "shadow"]),
    (
        "beside-quality-shadow-fails",
        shadow_report(violations=1),
        [report(0.8)],
        None,
        False,
        ["beats stable v1", "policy_violations 1 > stable's 0"],
    ),
    (
        "beside-quality-of-another-stable-is-ignored",
        shadow_report(violations=9, reference="s@v0"),
        [report(0.8)],
        None,
        True,
        ["beats stable v1"],
    ),
]


@pytest.mark.parametrize(
    ("case", "shadow", "others", "requested", "passes", "fragments"),
    SHADOW_CASES,
    ids=[c[0] for c in SHADOW_CASES],
)
def test_gate_reads_shadow_reports(
    store: AdapterStore,
    tmp_path: Path,
    case: str,
    shadow: EvalReport,
    others: list[EvalReport],
    requested: str | None,
    passes: bool,
    fragments: list[str],
) -> None:
    stable = add_version(store, tmp_path, "s", "v1")
    candidate = add_version(store, tmp_path, "s", "v2", seed=1)
    store.add_eval("s", "v1", report(0.7), actor="ci")
    for r in [shadow, *others]:
        store.add_eval("s", "v2", r, actor="ci")

    result = evaluate_gate(candidate, stable, requested)

    assert result.passed is passes, result.reason
    for fragment in fragments:
        assert fragment in result.reason
