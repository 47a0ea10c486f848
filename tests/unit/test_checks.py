"""Output checks (server/releases/checks.py) and their manifest schema (server/store/rollout.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from server.releases.checks import CheckResult, Checks, CompiledChecks
from server.store.rollout import OutputChecks
from server.store.store import AdapterStore
from tests.factory import add_version

SCHEMA = {
    "type": "object",
    "properties": {"label": {"enum": ["positive", "negative"]}},
    "required": ["label"],
}
CHECKS = OutputChecks(
    json_schema=SCHEMA, deny_patterns=(r"\d{3}-\d{2}-\d{4}",), deny_words=("Idiot",)
)

# (answer, schema error, policy violation)
ANSWERS: list[tuple[str, bool, bool]] = [
    ('{"label": "positive"}', False, False),
    ('  {"label": "negative"}\n', False, False),
    ('{"label": "maybe"}', True, False),
    ("positive", True, False),
    ("", True, False),
    ('{"label": "positive", "note": "SSN 123-45-6789"}', False, True),
    ('{"label": "negative", "note": "you IDIOT"}', False, True),
    ('{"label": "negative", "note": "idiotic"}', False, False),  # whole words only
    ("[" * 5000 + "]" * 5000, True, False),  # too deep for the parsers: not JSON, no crash
]


@pytest.mark.parametrize(("answer", "schema_error", "violation"), ANSWERS)
def test_checks_apply(answer: str, schema_error: bool, violation: bool) -> None:
    assert CompiledChecks(CHECKS).apply(answer) == CheckResult(schema_error, violation)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"json_schema": {"type": "no-such-type"}}, "not a valid JSON Schema"),
        ({"deny_patterns": ["(("]}, "is not a regex"),
        ({"deny_words": [" "]}, "empty word"),
        ({"deny_list": ["x"]}, "Extra inputs"),
    ],
)
def test_bad_checks_are_refused(fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        OutputChecks.model_validate(fields)


def test_a_schema_ref_to_a_url_is_refused_not_fetched() -> None:
    with pytest.raises(ValidationError, match="does not compile"):
        OutputChecks(json_schema={"$ref": "https://example.invalid/schema.json"})


def test_checks_come_from_the_manifest_and_are_compiled_once(
    store: AdapterStore, tmp_path: Path
) -> None:
    checked = add_version(store, tmp_path, "s", "v1", checks=CHECKS.model_dump())
    plain = add_version(store, tmp_path, "s", "v2", seed=1)
    checks = Checks()
    assert checks.declared(checked) and not checks.declared(plain)
    assert checks.apply(checked, "nope") == CheckResult(schema_error=True)
    assert checks.apply(plain, "nope") == CheckResult()
    checks.retain({"s@v1"})
    assert checks.apply(checked, '{"label": "positive"}') == CheckResult()
