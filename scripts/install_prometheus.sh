#!/usr/bin/env bash
# Install Prometheus (the server and promtool) from Debian's `prometheus` package, idempotently.
#
#   scripts/install_prometheus.sh
#
# The observability checks need them: `promtool check config|rules` on deploy/prometheus/ and
# the slow test that runs a real Prometheus against a gateway and simulated engines
# (tests/integration/test_observability.py). Both skip with a reason when the binaries are absent.
# Already installed: nothing happens. Needs root (CI runs as root) or passwordless sudo.
# The package's maintainer scripts would start a system Prometheus on :9090; a temporary
# policy-rc.d forbids that (we only want the binaries).
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    echo "prometheus already installed: $(prometheus --version 2>&1 | head -n1)"
    exit 0
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        echo "install_prometheus: need root (or passwordless sudo) to apt-get install prometheus" >&2
        exit 1
    fi
fi

POLICY=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e "$POLICY" ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    created_policy=1
fi
cleanup() {
    if [[ "$created_policy" -eq 1 ]]; then "${SUDO[@]}" rm -f "$POLICY"; fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends prometheus >/dev/null
prometheus --version 2>&1 | head -n1
promtool --version 2>&1 | head -n1
