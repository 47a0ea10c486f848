#!/usr/bin/env bash
# Install Debian's haproxy, idempotently: the load balancer in front of two gateway replicas
# in the slow scale-out test (tests/integration/test_scale_out_haproxy.py), which skips with a
# reason when it is absent.
#
#   scripts/install_haproxy.sh
#
# Already installed: nothing happens. Needs root (CI runs as root) or passwordless sudo. The
# package's maintainer scripts would start a system haproxy on :80; a temporary policy-rc.d
# forbids that (the test runs its own, on a loopback port).
set -euo pipefail

if command -v haproxy >/dev/null 2>&1; then
    echo "haproxy already installed: $(haproxy -v 2>&1 | head -n1)"
    exit 0
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        echo "install_haproxy: need root (or passwordless sudo) to apt-get install haproxy" >&2
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
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends haproxy >/dev/null
haproxy -v 2>&1 | head -n1
