"""Serving one request: who is calling, what they asked for, and relaying the answer.

- `gateway`  `Gateway`: resolve → place → lease → forward → relay, with metrics
- `prepare`  per-tenant limits and the version's prompt template, applied to a request body
- `routing`  model string / X-Task / tenant default → the exact version to serve
- `sse`      engine SSE in, client SSE out (model rewritten, usage captured)
- `models`   the `/v1/models` listing a tenant may see
- `tenants`  API keys → tenants, their adapters, tasks and limits
- `limits`   per-tenant admission: request rate, token rate, concurrency
- `auth`     the admin bearer token
- `outcomes` what the gateway reports of each request (to canary analysis) and its text
- `shadow`   mirrors of a share of the stable's requests to a shadow candidate
- `swap_cost` the first request's extra time after an adapter load, per engine
"""
