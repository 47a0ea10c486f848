"""The vLLM engines: talking to them, what they hold, where a request goes, keeping them up.

- `client`      `EngineClient` protocol and its HTTP implementation
- `registry`    adapter residency per engine: LRU slots, single-flight loads, pins, reconcile
- `placement`   which engines are up, which one serves a request, and the lease on it
- `supervisor`  managed engine processes: start, health, restart with backoff
- `demo_model`  builds the demo base model (run in a child process: it imports torch)
"""
