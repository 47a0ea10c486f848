"""Output checks: what a version's manifest says every answer must satisfy
(`server.store.rollout.OutputChecks`), compiled once per version and applied to answers.

An answer that does not parse as JSON, or does not match the JSON schema, is a schema error;
one that matches a denied regex or contains a denied word (whole word, any case) is a policy
violation. Applied to the answers of versions in a canary or a shadow (never on other
traffic), on the gateway's event loop: checks are regexes and a compiled JSON Schema
validator (jsonschema-rs), microseconds per answer of a few hundred tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import jsonschema_rs

from server import jsonio
from server.store.rollout import OutputChecks
from server.store.snapshot import AdapterVersion


@dataclass(frozen=True)
class CheckResult:
    schema_error: bool = False
    policy_violation: bool = False


PASSED = CheckResult()


class CompiledChecks:
    """One version's checks, ready to apply."""

    def __init__(self, checks: OutputChecks) -> None:
        self._schema = (
            None
            if checks.json_schema is None
            # offline: a `$ref` to a URL is an error, never a network call from the gateway.
            else jsonschema_rs.validator_for(checks.json_schema, offline=True)
        )
        words = [re.escape(w.strip()) for w in checks.deny_words]
        patterns = list(checks.deny_patterns)
        if words:
            patterns.append(r"(?i)\b(?:" + "|".join(words) + r")\b")
        self._deny = [re.compile(p) for p in patterns]

    def apply(self, text: str) -> CheckResult:
        return CheckResult(
            schema_error=self._schema is not None and not self._matches_schema(text),
            policy_violation=any(p.search(text) for p in self._deny),
        )

    def _matches_schema(self, text: str) -> bool:
        assert self._schema is not None
        try:
            answer = jsonio.loads(text.strip())
        except (ValueError, RecursionError):
            return False
        return self._schema.is_valid(answer)


class Checks:
    """Compiled checks by version (versions are immutable: compiled once, kept while the
    version is in a canary or shadow; `retain` forgets the others)."""

    def __init__(self) -> None:
        self._compiled: dict[str, CompiledChecks | None] = {}

    def declared(self, version: AdapterVersion) -> bool:
        return version.manifest.checks is not None

    def apply(self, version: AdapterVersion, text: str) -> CheckResult:
        key = version.engine_name
        if key not in self._compiled:
            checks = version.manifest.checks
            self._compiled[key] = None if checks is None else CompiledChecks(checks)
        compiled = self._compiled[key]
        return PASSED if compiled is None else compiled.apply(text)

    def retain(self, keys: set[str]) -> None:
        self._compiled = {k: v for k, v in self._compiled.items() if k in keys}
