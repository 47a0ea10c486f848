# The loragate gateway image. The engine runs beside it from the official vLLM image
# (see deploy/compose.yaml); this image never contains vLLM or model weights.
# Pinned to a patch release (hadolint DL3006/DL3007): rebuilds get the same interpreter.
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY loadtest ./loadtest
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11.11-slim-bookworm
RUN useradd --system --uid 10001 --home-dir /srv loragate
COPY --from=build /install /usr/local
# Owned by the gateway user: promote/rollback rewrite channels.json, uploads add versions.
COPY --chown=loragate:loragate adapters /srv/adapters
WORKDIR /srv
USER loragate
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2); sys.exit(0)"]
ENTRYPOINT ["loragate"]
CMD ["serve", "--config", "/etc/loragate/config.yaml", "--host", "0.0.0.0", "--port", "8000"]
