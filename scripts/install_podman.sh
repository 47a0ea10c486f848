#!/usr/bin/env bash
# Install a container runtime for the image, compose and Kubernetes tests, idempotently.
#
#   scripts/install_podman.sh [VENV]
#
# Debian's podman (rootful) with runc, netavark + aardvark-dns (containers on a network find
# each other by name and alias, as Services do; netavark runs iptables, which its package does
# not declare), catatonit (the pause process of pods, for `podman kube play`) and debootstrap
# (scripts/build_images.sh makes the base image with it: no registry can be reached here).
# podman-compose comes from PyPI into VENV (default .venv): Debian's 1.0.3 predates compose
# profiles.
#
# The sandbox needs a few settings, written to /etc/containers/containers.conf.d/:
# runc instead of crun (crun refuses the hybrid cgroup v1/v2 layout), cgroupfs (no systemd),
# no default ulimits (podman's default nofile/nproc exceed what the sandbox allows: runc fails
# with "error setting rlimit"), and the netavark network backend.
# Already installed and configured: nothing happens. Needs root (CI runs as root) or
# passwordless sudo.
set -euo pipefail

VENV=${1:-.venv}
PACKAGES=(podman runc conmon catatonit netavark aardvark-dns iptables debootstrap)
CONF=/etc/containers/containers.conf.d/90-loragate.conf

bash "$(dirname "${BASH_SOURCE[0]}")/install_debs.sh" "${PACKAGES[@]}"
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    SUDO=(sudo -n)  # install_debs.sh has checked that it works
fi

config=$(
    cat <<'EOF'
# Written by loragate's scripts/install_podman.sh.
[containers]
# podman's default nofile/nproc limits exceed the sandbox's: runc fails "error setting rlimit".
default_ulimits = []

[engine]
# crun refuses the hybrid cgroup v1/v2 layout here, and there is no systemd to manage cgroups.
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
# netavark + aardvark-dns: containers on a user network resolve each other's names and aliases.
network_backend = "netavark"
EOF
)
if [[ ! -f "$CONF" ]] || [[ "$(cat "$CONF")" != "$config" ]]; then
    "${SUDO[@]}" mkdir -p "$(dirname "$CONF")"
    printf '%s\n' "$config" | "${SUDO[@]}" tee "$CONF" >/dev/null
fi

if [[ -x "$VENV/bin/python" ]] && ! "$VENV/bin/python" -m pip show -q podman-compose 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q "podman-compose==1.6.0"
fi

podman --version
