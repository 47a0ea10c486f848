#!/usr/bin/env bash
# Install a container runtime for the image, compose and Kubernetes tests, idempotently.
#
#   scripts/install_podman.sh [VENV]
#
# Debian's podman (rootful) with runc, netavark + aardvark-dns (containers on a network find
# each other by name and alias, as Services do; netavark runs iptables, which its package does
# not declare), catatonit (the pause process of pods, for `podman kube play`) and debootstrap (scripts/build_images.sh makes the base image with it:
# no registry can be reached here). podman-compose comes from PyPI into VENV (default .venv):
# Debian's 1.0.3 predates compose profiles.
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

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        echo "install_podman: need root (or passwordless sudo) to apt-get install podman" >&2
        exit 1
    fi
fi

missing=()
for package in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
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
