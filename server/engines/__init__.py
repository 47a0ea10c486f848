"""The vLLM engines: talking to them, what they hold, where a request goes, keeping them up.

- `client`      `EngineClient` protocol and its HTTP implementation
- `scrape`      what an engine reports on /metrics (running, waiting, busy LoRAs): a pure parser
- `residency`   the cached view of each engine (what it holds and runs), refreshed every second
- `slots`       one engine's slots and the rules that pick a victim or a slot to drain
- `swaplock`    one engine's loads and evictions serialized across gateway replicas (flock)
- `swaps`       the engine calls that change residency: loads, evictions, drains, trims
- `registry`    adapter residency per engine: slots, single-flight loads, pins, reconcile
- `policies`    placement policies: affinity, round_robin, least_loaded
- `placement`   which engines are up, which one serves a request, and the lease on it
- `admission`   each engine's bounded admission queue (shedding, a limit learned from its queue)
- `discovery`   the engines that exist: the static list and DNS (a headless Service)
- `fleet`       adds discovered engines and drains vanished ones
- `supervisor`  managed engine processes: start, health, restart with backoff
- `demo_model`  builds the demo base model (run in a child process: it imports torch)
"""
