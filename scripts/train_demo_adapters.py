"""Train the demo LoRA adapters (v1: little data, few steps; v2: more) on the demo base, on CPU.

    python scripts/train_demo_adapters.py OUT [--tasks sentiment,summarize,qa]
        [--versions v1,v2] [--data datasets] [--no-eval]

Needs the engine venv (torch, transformers, peft; scripts/install_engine.sh) and the data from
scripts/demo_data.py. For each task and version it writes

    OUT/<task>/<version>/adapter_config.json        raw PEFT output, base_model_name_or_path
    OUT/<task>/<version>/adapter_model.safetensors  set to "demo-base"
    OUT/<task>/<version>.json       prompt template + how it was trained (+ eval)
    OUT/<task>/<version>.eval.json  held-out eval, shaped like server.store.manifest.EvalReport
    OUT/<task>/base.eval.json       the bare base model on the same held-out set
    OUT/results.json                every score, one place

and the lead packages a version with
`loragate adapters package OUT/<task>/<version> --template "$(jq -r .prompt_template ...)" ...`.

Training: PEFT LoRA r=8, alpha 16, dropout 0, on q_proj and v_proj, fp32, AdamW, batch 8, loss
on the target tokens only (the target is " " + target + <|im_end|>, so the adapter learns to
stop). Fixed seeds: the same command gives the same adapters on the same machine.
Eval: greedy decoding of the held-out inputs, cut at the first newline; exact match
(sentiment), ROUGE-L F1 (summarize), SQuAD token F1 (qa).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import string
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SEED = 1234
BATCH_SIZE = 8
LEARNING_RATE = 1e-3
MAX_TOKENS_PER_EXAMPLE = 256
EVAL_BATCH_SIZE = 20
BASE_MODEL_ID = "demo-base"
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


@dataclass(frozen=True)
class Recipe:
    examples: int  # the first N training examples
    steps: int  # optimizer steps of BATCH_SIZE examples


RECIPES = {"v1": Recipe(examples=40, steps=15), "v2": Recipe(examples=300, steps=120)}


# --- metrics -----------------------------------------------------------------------------


def normalize_tokens(text: str) -> list[str]:
    """Lowercase, drop punctuation and articles, split on whitespace (SQuAD's normalisation)."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return [t for t in text.split() if t not in {"a", "an", "the"}]


def exact_match(prediction: str, target: str) -> float:
    return float(normalize_tokens(prediction) == normalize_tokens(target))


def token_f1(prediction: str, target: str) -> float:
    pred, gold = normalize_tokens(prediction), normalize_tokens(target)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return float(pred == gold)
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, target: str) -> float:
    """ROUGE-L F1 over lowercased words (longest common subsequence)."""
    pred = prediction.lower().translate(str.maketrans("", "", string.punctuation)).split()
    gold = target.lower().translate(str.maketrans("", "", string.punctuation)).split()
    if not pred or not gold:
        return float(pred == gold)
    lcs = [[0] * (len(gold) + 1) for _ in range(len(pred) + 1)]
    for i, p in enumerate(pred):
        for j, g in enumerate(gold):
            lcs[i + 1][j + 1] = lcs[i][j] + 1 if p == g else max(lcs[i][j + 1], lcs[i + 1][j])
    length = lcs[-1][-1]
    if length == 0:
        return 0.0
    precision, recall = length / len(pred), length / len(gold)
    return 2 * precision * recall / (precision + recall)


METRICS = {"exact_match": exact_match, "token_f1": token_f1, "rouge_l": rouge_l}


# --- data --------------------------------------------------------------------------------


def load_task(
    data_dir: Path, task: str
) -> tuple[dict[str, Any], list[dict[str, str]], list[dict[str, str]]]:
    directory = data_dir / task
    prompt = json.loads((directory / "prompt.json").read_text())
    train, heldout = (
        [json.loads(line) for line in (directory / f"{split}.jsonl").read_text().splitlines()]
        for split in ("train", "heldout")
    )
    return prompt, train, heldout


def render(template: str, text: str) -> str:
    return template.replace("{input}", text)  # literally, as the gateway does


# --- training ----------------------------------------------------------------------------


def encode(tokenizer: Any, template: str, example: dict[str, str]) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 on the prompt: the loss is on the target only)."""
    prompt = tokenizer(render(template, example["input"])).input_ids
    target = [*tokenizer(" " + example["target"]).input_ids, tokenizer.eos_token_id]
    ids = (prompt + target)[:MAX_TOKENS_PER_EXAMPLE]
    labels = ([-100] * len(prompt) + target)[:MAX_TOKENS_PER_EXAMPLE]
    return ids, labels


def batches(n: int, steps: int, rng: random.Random) -> list[list[int]]:
    """`steps` batches of example indices, reshuffled each pass over the data."""
    order: list[int] = []
    out = []
    for _ in range(steps):
        if len(order) < BATCH_SIZE:
            fresh = list(range(n))
            rng.shuffle(fresh)
            order += fresh
        out.append(order[:BATCH_SIZE])
        order = order[BATCH_SIZE:]
    return out


def train(
    base_dir: Path, template: str, examples: list[dict[str, str]], recipe: Recipe
) -> tuple[Any, list[float]]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(**LORA, task_type="CAUSAL_LM"))
    model.train()
    encoded = [encode(tokenizer, template, e) for e in examples[: recipe.examples]]
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=LEARNING_RATE, weight_decay=0.0
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: 1.0 - step / recipe.steps,  # linear decay to 0
    )
    losses = []
    for indices in batches(len(encoded), recipe.steps, random.Random(SEED)):
        rows = [encoded[i] for i in indices]
        width = max(len(ids) for ids, _ in rows)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    model.eval()
    return model, losses


def save_adapter(model: Any, out_dir: Path) -> None:
    """Only the two PEFT files (no README), base_model_name_or_path = demo-base."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        config = json.loads((Path(tmp) / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = BASE_MODEL_ID
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        weights = out_dir / "adapter_model.safetensors"
        shutil.copyfile(Path(tmp) / "adapter_model.safetensors", weights)
        weights.chmod(0o644)  # safetensors writes 0600; engines may run as another user


# --- eval --------------------------------------------------------------------------------


def generate(model: Any, tokenizer: Any, prompts: list[str], max_tokens: int) -> list[str]:
    """Greedy completions, batched with left padding, cut at the first newline."""
    import torch

    tokenizer.padding_side = "left"
    outputs = []
    for start in range(0, len(prompts), EVAL_BATCH_SIZE):
        chunk = prompts[start : start + EVAL_BATCH_SIZE]
        enc = tokenizer(chunk, return_tensors="pt", padding=True)
        with torch.no_grad():
            generated = model.generate(
                **enc,
                max_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        for row in generated[:, enc.input_ids.shape[1] :]:
            text = tokenizer.decode(row, skip_special_tokens=True)
            outputs.append(text.strip().split("\n")[0].strip())
    return outputs


def evaluate(
    model: Any, tokenizer: Any, prompt: dict[str, Any], heldout: list[dict[str, str]]
) -> dict[str, Any]:
    metric = METRICS[prompt["metric"]]
    prompts = [render(prompt["completion"], e["input"]) for e in heldout]
    predictions = generate(model, tokenizer, prompts, int(prompt["max_tokens"]))
    scores = [metric(p, e["target"]) for p, e in zip(predictions, heldout, strict=True)]
    return {
        "score": round(sum(scores) / len(scores), 4),
        "n": len(scores),
        "examples": [
            {"target": e["target"], "prediction": p}
            for p, e in zip(predictions[:3], heldout, strict=False)
        ],
    }


def eval_report(
    task: str, metric: str, result: dict[str, Any], model: str, baseline: float | None
) -> dict[str, Any]:
    """Shaped like server.store.manifest.EvalReport (extra keys would be rejected there)."""
    return {
        "dataset": f"demo-{task}-heldout",
        "metric": metric,
        "score": result["score"],
        "n": result["n"],
        "baseline_score": baseline,
        "model": model,
    }


# --- driver ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sys.path.insert(0, str(REPO))
    from server.engines.demo_model import build_demo_base

    base_dir = build_demo_base()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    results: dict[str, Any] = {}
    for task in args.tasks:
        prompt, train_set, heldout = load_task(args.data, task)
        task_dir = args.out / task
        task_dir.mkdir(parents=True, exist_ok=True)
        results[task] = {"metric": prompt["metric"]}
        baseline = None
        if args.eval:
            started = time.monotonic()
            base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
            result = evaluate(base, tokenizer, prompt, heldout)
            baseline = result["score"]
            results[task]["base"] = {**result, "eval_s": round(time.monotonic() - started, 1)}
            report = eval_report(task, prompt["metric"], result, BASE_MODEL_ID, None)
            (task_dir / "base.eval.json").write_text(json.dumps(report, indent=2) + "\n")
            log(f"{task} base: {prompt['metric']} {baseline}")
        for version in args.versions:
            recipe = RECIPES[version]
            started = time.monotonic()
            model, losses = train(base_dir, prompt["completion"], train_set, recipe)
            train_s = time.monotonic() - started
            save_adapter(model, task_dir / version)
            info: dict[str, Any] = {
                "task": task,
                "version": version,
                "prompt_template": prompt["completion"],
                "max_tokens": prompt["max_tokens"],
                "dataset": f"datasets/{task}/train.jsonl",
                "recipe": {
                    **asdict(recipe),
                    "batch_size": BATCH_SIZE,
                    "lr": LEARNING_RATE,
                    "seed": SEED,
                    **LORA,
                },
                "loss_first": round(losses[0], 4),
                "loss_last": round(losses[-1], 4),
                "train_s": round(train_s, 1),
            }
            if args.eval:
                started = time.monotonic()
                result = evaluate(model, tokenizer, prompt, heldout)
                info["eval"] = {**result, "eval_s": round(time.monotonic() - started, 1)}
                report = eval_report(task, prompt["metric"], result, f"{task}@{version}", baseline)
                (task_dir / f"{version}.eval.json").write_text(json.dumps(report, indent=2) + "\n")
            (task_dir / f"{version}.json").write_text(json.dumps(info, indent=2) + "\n")
            results[task][version] = info
            score = info.get("eval", {}).get("score")
            log(
                f"{task} {version}: {train_s:.0f} s, loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
                f"{prompt['metric']} {score}"
            )
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="output directory, e.g. /tmp/demo-train")
    parser.add_argument("--data", type=Path, default=REPO / "datasets")
    parser.add_argument("--tasks", default="sentiment,summarize,qa")
    parser.add_argument("--versions", default="v1,v2")
    parser.add_argument("--no-eval", dest="eval", action="store_false")
    args = parser.parse_args()
    args.tasks = args.tasks.split(",")
    args.versions = args.versions.split(",")
    run(args)


if __name__ == "__main__":
    main()
