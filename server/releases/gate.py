"""The eval gate: may a candidate version replace the stable one?

Pure policy over eval reports (`evals/<dataset>.json` and the manifest's packaging-time
eval). The gate dataset is the one the caller names, else the dataset of the stable's
packaging-time eval, else the candidate's only eval. A candidate passes when its score there
beats the stable's (same metric, and no more `policy_violations` or `schema_errors`), or —
when there is no stable — the base model's score in its own report (`baseline_score`); the
base's violation counts are not measured, so against the baseline only the score counts.
A candidate without an eval on the gate dataset does not pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from server.store.manifest import EvalReport
from server.store.snapshot import AdapterVersion


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
    return next(iter(candidate_evals)) if len(candidate_evals) == 1 else None


def evaluate_gate(
    candidate: AdapterVersion, stable: AdapterVersion | None, requested: str | None = None
) -> GateResult:
    """The verdict (see the module docstring); never raises. Blocking: reads eval reports."""
    who, evals = candidate.engine_name, candidate.evals()
    dataset = gate_dataset(evals, stable, requested)
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
