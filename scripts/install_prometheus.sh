#!/usr/bin/env bash
# Install Prometheus (the server and promtool) from Debian's `prometheus` package, idempotently.
#
#   scripts/install_prometheus.sh
#
# The observability checks need them: `promtool check config|rules` on deploy/prometheus/ and
# the slow test that runs a real Prometheus against a gateway and simulated engines
# (tests/integration/test_observability.py). Both skip with a reason when the binaries are absent.
set -euo pipefail
bash "$(dirname "${BASH_SOURCE[0]}")/install_debs.sh" prometheus
prometheus --version 2>&1 | head -n1
promtool --version 2>&1 | head -n1
