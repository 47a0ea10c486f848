# The loragate gateway image (the default, last target) and the simulated vLLM engine (target
# `sim`, loadtest/sim: for deployment tests without a model). The real engine runs beside the
# gateway from the official vLLM image (deploy/engine.Dockerfile, deploy/compose.yaml); this
# file never installs vLLM or model weights.
#
#   docker build -t loragate-gateway:local .
#   docker build --target sim -t loragate-sim:local .
#
# BASE: a Debian-based image with Python >= 3.11 and its venv module. Default: the official slim
# image, pinned to a patch release (hadolint DL3006/DL3007). Where no registry can be reached,
# scripts/build_images.sh makes a Debian bookworm base with debootstrap and passes it here.
ARG BASE=python:3.11.11-slim-bookworm

FROM ${BASE} AS build
WORKDIR /src
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
# The dependencies (and the build backend) in a layer of their own: a change to the code does
# not download them again. A build behind a TLS-intercepting proxy passes that proxy's CA as the
# secret pip-ca (scripts/build_images.sh does); without it pip uses its own CA bundle.
RUN --mount=type=secret,id=pip-ca \
    if [ -f /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && python3 -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > requirements.txt \
 && pip install --no-cache-dir "setuptools>=69" wheel -r requirements.txt
COPY server ./server
COPY loadtest ./loadtest
# Offline: everything it needs is in the layer above.
RUN pip install --no-cache-dir --no-deps --no-build-isolation .

# What both images run on: the virtualenv (python, the gateway, the simulated engine).
FROM ${BASE} AS runtime
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The simulated engine: python -m loadtest.simengine, vLLM's HTTP API and runtime LoRA loading.
# It reads adapter directories the gateway names, so it mounts the store at the gateway's path.
FROM runtime AS sim
RUN groupadd --system --gid 10002 sim \
 && useradd --system --uid 10002 --gid 10002 --no-create-home --home-dir /nonexistent sim
USER sim
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/opt/venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
ENTRYPOINT ["/opt/venv/bin/python", "-m", "loadtest.simengine"]
CMD ["--host", "0.0.0.0", "--port", "8000", "--model", "demo-base", "--max-loras", "2", \
     "--max-cpu-loras", "4", "--max-lora-rank", "8"]

# The gateway (the default target).
FROM runtime AS gateway
# uid and gid 10001: deploy/k8s/gateway.yaml runs as 10001:10001 with fsGroup 10001.
RUN groupadd --system --gid 10001 loragate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /srv loragate
# Owned by the gateway user: promote/rollback rewrite channels.json, uploads add versions.
COPY --chown=10001:10001 adapters /srv/adapters
WORKDIR /srv
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/opt/venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["/opt/venv/bin/loragate"]
CMD ["serve", "--config", "/etc/loragate/config.yaml", "--host", "0.0.0.0", "--port", "8000"]
