"""The eval gate: may a candidate version replace the stable one?

Pure policy over eval reports (`evals/<dataset>.json` and the manifest's packaging-time
eval). The gate dataset is the one the caller names, else the dataset of the stable's
packaging-time eval, else the candidate's only eval. A candidate passes when its score there
beats the stable's (same metric, and no more `policy_violations` or `schema_errors`), or —
when there is no stable — the base model's score in its own report (`baseline_score`); the
base's violation counts are not measured, so against the baseline only the score counts.
A candidate without an eval on the gate dataset does not pass.

Shadow reports (`evals/shadow.json`, `server.releases.shadow_report`) measure the candidate on
the stable's live traffic, not its quality: agreement with the stable is no score to beat.
When the candidate has one against the current stable, the gate also requires that on those
requests the candidate failed no more output checks than the stable (policy violations,
schema errors) and failed at most `MAX_SHADOW_ERROR_RATE` of them. Named as the gate dataset
(`shadow`), that is the whole verdict: a team without an offline eval set promotes on live
evidence, audited as such.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from server.store.manifest import EvalReport
from server.store.snapshot import AdapterVersion

SHADOW_DATASET = "shadow"
MAX_SHADOW_ERROR_RATE = 0.01  # of the mirrored requests the stable answered


@dataclass(frozen=True)
class GateResult:
    """The eval gate's verdict on a candidate, with the numbers it compared."""

    passed: bool
    reason: str
    dataset: str | None = None
    metric: str | None = None
    candidate_score: float | None = None
    reference: str | None = None  # "stable v2" or "baseline"
    reference_score: float | None = None


def gate_dataset(
    candidate_evals: Mapping[str, EvalReport], stable: AdapterVersion | None, requested: str | None
) -> str | None:
    """The requested dataset, else the stable's packaging-time eval's, else the candidate's
    only eval; None when none of these exists."""
    if requested:
        return requested
    if stable is not None and stable.manifest.eval is not None:
        return stable.manifest.eval.dataset
    quality = [d for d, r in candidate_evals.items() if r.shadow is None]
    if len(quality) == 1:
        return quality[0]
    return SHADOW_DATASET if not quality and SHADOW_DATASET in candidate_evals else None


def evaluate_gate(
    candidate: AdapterVersion, stable: AdapterVersion | None, requested: str | None = None
) -> GateResult:
    """The verdict (see the module docstring); never raises. Blocking: reads eval reports."""
    evals = candidate.evals()
    shadow = _live_report(evals, stable)
    dataset = gate_dataset(evals, stable, requested)
    if dataset == SHADOW_DATASET:
        if shadow is None:
            reason = f"{candidate.engine_name} has no shadow report against the current stable"
            return GateResult(False, reason, dataset)
        return _shadow_verdict(shadow)
    verdict = _quality(candidate, stable, dataset, evals)
    if not verdict.passed or shadow is None:
        return verdict
    live = _shadow_verdict(shadow)
    reason = f"{verdict.reason}; {live.reason}"
    return dataclasses.replace(verdict, passed=live.passed, reason=reason)


def _live_report(
    evals: Mapping[str, EvalReport], stable: AdapterVersion | None
) -> EvalReport | None:
    """The candidate's shadow report, if it was measured against the current stable."""
    report = evals.get(SHADOW_DATASET)
    if report is None or report.shadow is None or stable is None:
        return None
    return report if report.shadow.reference == stable.engine_name else None


def _shadow_verdict(report: EvalReport) -> GateResult:
    stats = report.shadow
    assert stats is not None
    parts = [
        f"shadow vs {stats.reference} on {report.n} requests: agreement "
        f"{report.metric}={report.score:.4f}, exact {stats.exact_match:.1%}"
    ]
    passed = True
    for name, a, b in (
        ("policy_violations", report.policy_violations, stats.reference_policy_violations),
        ("schema_errors", report.schema_errors, stats.reference_schema_errors),
    ):
        passed = passed and a <= b
        parts.append(f"{name} {a} {'<=' if a <= b else '>'} stable's {b}")
    rate = stats.errors / report.n
    passed = passed and rate <= MAX_SHADOW_ERROR_RATE
    sign = "<=" if rate <= MAX_SHADOW_ERROR_RATE else ">"
    parts.append(f"errors {stats.errors} ({rate:.1%} {sign} {MAX_SHADOW_ERROR_RATE:.0%})")
    metric, score = report.metric, report.score
    return GateResult(passed, "; ".join(parts), SHADOW_DATASET, metric, score, stats.reference)


def _quality(
    candidate: AdapterVersion,
    stable: AdapterVersion | None,
    dataset: str | None,
    evals: Mapping[str, EvalReport],
) -> GateResult:
    """The verdict on a quality dataset (the module docstring's first paragraph)."""
    who = candidate.engine_name
    if dataset is None:
        have = ", ".join(sorted(evals)) or "none"
        return GateResult(
            False,
            f"no gate dataset: {who} has evals [{have}] and the stable "
            "has no packaging-time eval; name one with `dataset`",
        )
    mine = evals.get(dataset)
    if mine is None:
        return GateResult(False, f"{who} has no eval on gate dataset {dataset!r}", dataset)
    if stable is None:
        if mine.baseline_score is None:
            reason = f"no stable, and {who}'s eval on {dataset!r} has no baseline_score"
            return GateResult(False, reason, dataset, mine.metric, mine.score)
        return _compare(who, dataset, mine, "baseline", mine.baseline_score, None)
    theirs = stable.evals().get(dataset)
    if theirs is None:
        return GateResult(
            False,
            f"stable {stable.engine_name} has no eval on {dataset!r} to compare with",
            dataset,
            mine.metric,
            mine.score,
        )
    if theirs.metric != mine.metric:
        return GateResult(
            False,
            f"{dataset!r}: {who} reports {mine.metric}, stable "
            f"{stable.version} reports {theirs.metric}",
            dataset,
        )
    return _compare(who, dataset, mine, f"stable {stable.version}", theirs.score, theirs)


def _compare(
    who: str,
    dataset: str,
    mine: EvalReport,
    reference: str,
    score: float,
    theirs: EvalReport | None,
) -> GateResult:
    verb = "beats" if mine.score > score else "does not beat"
    parts = [
        f"{who} {mine.metric}={mine.score:.4f} on {dataset!r} {verb} {reference}'s {score:.4f}"
    ]
    passed = mine.score > score
    if theirs is not None:
        for name in ("policy_violations", "schema_errors"):
            a, b = getattr(mine, name), getattr(theirs, name)
            passed = passed and a <= b
            parts.append(f"{name} {a} {'<=' if a <= b else '>'} {b}")
    reason = "; ".join(parts)
    return GateResult(passed, reason, dataset, mine.metric, mine.score, reference, score)
