"""The HTTP layer: the only part of loragate that imports FastAPI or Starlette.

Routes parse, call one service method, and render.

- `deps`        `Annotated` dependency aliases (runtime, gateway, tenant, admin)
- `openai`      `/v1/completions`, `/v1/chat/completions`, `/v1/models`
- `admin`       `/admin/*`: register, promote, rollback, canary, shadow, pins, retire, audit
- `health`      `/healthz`, `/readyz`, `/metrics` (admin token only on this port)
- `errors`      the one mapping from loragate's exceptions to OpenAI's error JSON
- `middleware`  pure ASGI: request ids, body limits counted as bytes arrive
- `responses`   the streaming (SSE) response that always releases its lease
- `server`      uvicorn for the gateway: the drain on SIGTERM, the header timeout
- `metrics_listener`  Prometheus metrics on their own port
"""
