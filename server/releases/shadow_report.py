"""Shadow results as eval reports: each candidate's mirrored answers scored against the answers
the clients got, written to `evals/shadow.json` under the candidate (through
`AdapterStore.update_eval`), where the promotion gate reads them (`server.releases.gate`).

`ShadowReports` is the gateway's shadow sink (`server.serving.shadow.ShadowSink`, wired by the
runtime). Per candidate and reference it tallies on the event loop (token F1 and exact match
of the two answers, both versions' output checks, latencies, errors, drops) and `flush()`
adds the tally to the report on disk under a lock: gateways sharing a store each add their
own, so the report covers every gateway's mirrors. A report of another reference (the stable
changed) is replaced, not added to. Only numbers are kept, never a prompt or an answer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from server.releases.checks import Checks
from server.releases.evaluation import normalize, token_f1
from server.store.manifest import EvalReport
from server.store.rollout import LatencyCounts, ShadowStats
from server.store.snapshot import AdapterVersion
from server.store.store import AdapterStore

log = logging.getLogger(__name__)

DATASET = "shadow"
METRIC = "token_f1"  # agreement with the reference's answer; a failed mirror scores 0
ACTOR = "shadow"


@dataclass
class Tally:
    """One candidate's mirrors against one reference since the last flush."""

    n: int = 0
    f1_sum: float = 0.0
    exact: int = 0
    errors: int = 0
    dropped: int = 0
    violations: int = 0
    schema_errors: int = 0
    reference_violations: int = 0
    reference_schema_errors: int = 0
    latency: LatencyCounts = field(default_factory=LatencyCounts)
    reference_latency: LatencyCounts = field(default_factory=LatencyCounts)

    def report(self, model: str, reference: str, old: EvalReport | None) -> EvalReport:
        """This tally added to `old` (when `old` is a shadow report of the same reference)."""
        base = old if old is not None and old.shadow and old.shadow.reference == reference else None
        prior = base.shadow if base is not None else None
        n0 = base.n if base is not None else 0
        n = n0 + self.n
        score = ((base.score * n0 if base is not None else 0.0) + self.f1_sum) / n
        exact = ((prior.exact_match * n0 if prior is not None else 0.0) + self.exact) / n
        stats = ShadowStats(
            reference=reference,
            exact_match=round(exact, 4),
            errors=self.errors + (prior.errors if prior else 0),
            dropped=self.dropped + (prior.dropped if prior else 0),
            reference_policy_violations=self.reference_violations
            + (prior.reference_policy_violations if prior else 0),
            reference_schema_errors=self.reference_schema_errors
            + (prior.reference_schema_errors if prior else 0),
            latency=self.latency.plus(prior.latency) if prior else self.latency,
            reference_latency=(
                self.reference_latency.plus(prior.reference_latency)
                if prior
                else self.reference_latency
            ),
        )
        return EvalReport(
            dataset=DATASET,
            metric=METRIC,
            score=round(score, 4),
            n=n,
            policy_violations=self.violations + (base.policy_violations if base else 0),
            schema_errors=self.schema_errors + (base.schema_errors if base else 0),
            model=model,
            shadow=stats,
        )


class ShadowReports:
    """Tallies per (candidate, reference); written by `flush`."""

    def __init__(self, store: AdapterStore, checks: Checks | None = None) -> None:
        self.store = store
        self.checks = checks or Checks()
        # (candidate, reference) engine names -> the candidate, its tally
        self._tallies: dict[tuple[str, str], tuple[AdapterVersion, Tally]] = {}

    def _tally(self, candidate: AdapterVersion, reference: AdapterVersion) -> Tally:
        key = (candidate.engine_name, reference.engine_name)
        return self._tallies.setdefault(key, (candidate, Tally()))[1]

    # --- ShadowSink ---------------------------------------------------------------------

    def record_shadow(
        self,
        candidate: AdapterVersion,
        reference: AdapterVersion,
        *,
        failed: bool,
        latency_s: float,
        text: str | None,
        reference_text: str,
        reference_latency_s: float,
    ) -> None:
        tally = self._tally(candidate, reference)
        tally.n += 1
        tally.reference_latency = tally.reference_latency.observe(reference_latency_s)
        ours = self.checks.apply(reference, reference_text)
        tally.reference_violations += ours.policy_violation
        tally.reference_schema_errors += ours.schema_error
        if failed or text is None:
            tally.errors += 1
            return
        tally.latency = tally.latency.observe(latency_s)
        tally.f1_sum += token_f1(text, reference_text)
        tally.exact += normalize(text) == normalize(reference_text)
        theirs = self.checks.apply(candidate, text)
        tally.violations += theirs.policy_violation
        tally.schema_errors += theirs.schema_error

    def dropped(self, candidate: AdapterVersion, reference: AdapterVersion) -> None:
        self._tally(candidate, reference).dropped += 1

    # --- writing ------------------------------------------------------------------------

    async def flush(self) -> None:
        """Add every tally with a finished mirror to its candidate's report (drops alone
        wait for one: a report needs n >= 1)."""
        ready = {key: entry for key, entry in self._tallies.items() if entry[1].n}
        for key in ready:
            del self._tallies[key]
        for (_, reference), (candidate, tally) in ready.items():
            try:
                await asyncio.to_thread(self._write, candidate, reference, tally)
            except Exception:
                log.exception("shadow report not written", extra={"adapter": candidate.engine_name})

    def _write(self, candidate: AdapterVersion, reference: str, tally: Tally) -> None:
        self.store.update_eval(
            candidate.name,
            candidate.version,
            DATASET,
            lambda old: tally.report(candidate.engine_name, reference, old),
            actor=ACTOR,
        )
