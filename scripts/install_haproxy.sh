#!/usr/bin/env bash
# Install Debian's haproxy, idempotently: the load balancer in front of two gateway replicas
# in the slow scale-out test (tests/integration/test_scale_out_haproxy.py), which skips with a
# reason when it is absent.
#
#   scripts/install_haproxy.sh
set -euo pipefail
bash "$(dirname "${BASH_SOURCE[0]}")/install_debs.sh" haproxy
haproxy -v 2>&1 | head -n1
