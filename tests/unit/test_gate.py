"""The eval gate, table-driven over real eval reports written beside real versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.releases.gate import evaluate_gate, gate_dataset
from server.store.manifest import EvalReport
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
