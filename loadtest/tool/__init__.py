"""`loragate loadtest`: a workload tool for any OpenAI-compatible deployment.

Modules, in the order a run uses them:
- scenario        the Scenario model (workload, arrivals, bounds, targets, sim, actions)
- scenario_files  shipped scenarios (loadtest/scenarios/*.yaml), reading, --set overrides
- popularity      which adapter: uniform, Zipf, cycle in bursts, trace file
- arrivals        when: Poisson, constant, ramps, trace timestamps
- workload        the requests of a round (deterministic per seed)
- targets         endpoints, --target flags, probing for loragate
- tinystore       tiny adapters for simulated deployments
- deployment      simulated engines + gateways on loopback (processes or threads)
- client          one request, timed (aiohttp): TTFT, tokens, X-Adapter-Version, X-Engine
- records         RequestRecord and its columnar JSON form
- scrape          loragate's /metrics during the run
- actions         admin actions during a round (rollback, register, promote, …)
- progress        live terminal display (rich)
- runner          rounds alternating between targets, open and closed loop
- stats           percentiles, summaries, time buckets
- analysis        per-target summary, switch under load, swap overhead, engine spread
- results         results.json (write and read back)
- report          report.md
- plots           the PNG figures (matplotlib)
- session         end to end: targets or a simulated deployment → run → outputs
"""
