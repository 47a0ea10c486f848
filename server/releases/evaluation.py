"""Evaluation through the serving stack: a held-out set sent to the gateway, scored.

Metrics (all in [0, 1]): `exact_match` (first word of the answer vs the label, for
classification), `token_f1` (SQuAD-style bag-of-tokens F1, for QA), `rouge_l` (LCS F-measure
on tokens, for summaries). `schema_errors` counts answers outside the label set (or empty);
`policy_violations` counts answers that leak chat control tokens or match a deny pattern.
"""

from __future__ import annotations

import asyncio
import json
import re
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from server.store.manifest import EvalReport

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
DEFAULT_DENY = (r"<\|im_(start|end)\|>", r"<\|endoftext\|>")


def normalize(text: str) -> list[str]:
    return _PUNCT.sub(" ", text.lower()).split()


def exact_match(prediction: str, target: str) -> float:
    words = normalize(prediction)
    return float(bool(words) and words[0] == " ".join(normalize(target)))


def token_f1(prediction: str, target: str) -> float:
    pred, gold = normalize(prediction), normalize(target)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, target: str) -> float:
    pred, gold = normalize(prediction), normalize(target)
    if not pred or not gold:
        return 0.0
    # Longest common subsequence, one row at a time: O(len(pred) * len(gold)).
    previous = [0] * (len(gold) + 1)
    for p in pred:
        current = [0]
        for j, g in enumerate(gold):
            current.append(previous[j] + 1 if p == g else max(previous[j + 1], current[j]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(gold)
    return 2 * precision * recall / (precision + recall)


METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "token_f1": token_f1,
    "rouge_l": rouge_l,
}


def metric_for(dataset_id: str) -> str:
    """The metric a demo task is scored with, from its dataset id."""
    for hint, metric in (("sentiment", "exact_match"), ("summar", "rouge_l"), ("qa", "token_f1")):
        if hint in dataset_id:
            return metric
    raise ValueError(f"no default metric for dataset {dataset_id!r}: pass --metric")


@dataclass(frozen=True)
class Example:
    input: str
    target: str


def load_examples(path: Path, limit: int | None = None) -> list[Example]:
    """JSONL with `input` and `target` per line; raises ValueError naming the bad line."""
    examples = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            examples.append(Example(str(row["input"]), str(row["target"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: expected {{input, target}}: {exc}") from None
    return examples[:limit] if limit else examples


@dataclass(frozen=True)
class Scored:
    score: float
    n: int
    schema_errors: int
    policy_violations: int


def score(
    predictions: list[str],
    examples: list[Example],
    metric: str,
    deny: tuple[str, ...] = DEFAULT_DENY,
) -> Scored:
    fn = METRICS[metric]
    labels = {" ".join(normalize(e.target)) for e in examples} if metric == "exact_match" else None
    patterns = [re.compile(p) for p in deny]
    total = schema = policy = 0.0
    for prediction, example in zip(predictions, examples, strict=True):
        total += fn(prediction, example.target)
        words = normalize(prediction)
        if not words or (labels is not None and words[0] not in labels):
            schema += 1
        if any(p.search(prediction) for p in patterns):
            policy += 1
    n = len(examples)
    return Scored(total / n if n else 0.0, n, int(schema), int(policy))


async def predict(
    url: str,
    model: str,
    prompts: list[str],
    *,
    max_tokens: int,
    concurrency: int = 4,
    api_key: str | None = None,
    timeout_s: float = 300.0,
) -> list[str]:
    """Greedy completions of `prompts` through the gateway at `url`; first line of each."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limit = asyncio.Semaphore(concurrency)

    async def one(http: httpx.AsyncClient, prompt: str) -> str:
        body: dict[str, Any] = {
            "model": model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stop": ["\n"],
        }
        async with limit:
            response = await http.post("/v1/completions", json=body)
        if response.status_code != 200:
            raise RuntimeError(f"{model}: HTTP {response.status_code}: {response.text[:300]}")
        text: str = response.json()["choices"][0]["text"]
        return text.strip().split("\n")[0]

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout_s) as http:
        return list(await asyncio.gather(*(one(http, p) for p in prompts)))


def report(
    dataset: str, metric: str, model: str, scored: Scored, baseline: Scored | None
) -> EvalReport:
    return EvalReport(
        dataset=dataset,
        metric=metric,
        score=round(scored.score, 4),
        n=scored.n,
        baseline_score=round(baseline.score, 4) if baseline else None,
        policy_violations=scored.policy_violations,
        schema_errors=scored.schema_errors,
        model=model,
    )
