from __future__ import annotations

from pathlib import Path

import pytest

from server.releases.evaluation import (
    Example,
    exact_match,
    load_examples,
    metric_for,
    rouge_l,
    score,
    token_f1,
)


@pytest.mark.parametrize(
    ("metric", "prediction", "target", "expected"),
    [
        (exact_match, "Positive.", "positive", 1.0),
        (exact_match, " negative, clearly", "negative", 1.0),
        (exact_match, "neutral", "positive", 0.0),
        (exact_match, "", "positive", 0.0),
        (token_f1, "the Eiffel tower", "Eiffel Tower", 0.8),
        (token_f1, "Paris", "Paris", 1.0),
        (token_f1, "London", "Paris", 0.0),
        (rouge_l, "the cat sat on the mat", "the cat sat on the mat", 1.0),
        (rouge_l, "cat the", "the cat", 0.5),
        (rouge_l, "a b c d", "a c", pytest.approx(2 / 3)),
        (rouge_l, "", "a", 0.0),
    ],
)
def test_metrics(metric: object, prediction: str, target: str, expected: float) -> None:
    assert metric(prediction, target) == expected  # type: ignore[operator]


def test_score_counts_schema_errors_and_policy_violations() -> None:
    examples = [Example("a", "positive"), Example("b", "negative"), Example("c", "neutral")]
    scored = score(["positive", "maybe", "neutral <|im_end|>"], examples, "exact_match")
    assert scored.score == pytest.approx(2 / 3)
    assert (scored.n, scored.schema_errors, scored.policy_violations) == (3, 1, 1)


def test_metric_for_demo_tasks() -> None:
    assert [metric_for(d) for d in ("sentiment-heldout", "summarize-heldout", "qa-heldout")] == [
        "exact_match",
        "rouge_l",
        "token_f1",
    ]
    with pytest.raises(ValueError, match="--metric"):
        metric_for("other")


def test_load_examples_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"input": "x", "target": "y"}\n\n{"input": "z"}\n')
    with pytest.raises(ValueError, match=r"d.jsonl:3"):
        load_examples(path)
