"""A simulated vLLM 0.32 OpenAI-compatible engine with runtime LoRA loading.

Modules: config (SimConfig, Faults), protocol (vLLM-shaped models), errors, text
(deterministic answers), adapters (registry checks, CPU LRU), scheduler (max_loras
admission), engine (SimEngine), serving (responses and SSE), metrics (Prometheus), app
(create_app), server (SimEngineServer), cli (python -m loadtest.simengine).
"""
