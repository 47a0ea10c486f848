#!/usr/bin/env bash
# Build the gateway image and the simulated-engine image from the top-level Dockerfile.
#
#   scripts/build_images.sh            # loragate-gateway:local and loragate-sim:local
#
# Where a registry can be reached, `docker build .` with the default BASE (the official slim
# Python image) is all it takes. Here no registry can be reached, so the base is made locally:
# Debian bookworm (minbase + python3, python3-venv, ca-certificates) by debootstrap from the
# mirror the host's apt uses, imported as $LOCAL_BASE. Made once (~60 s, ~130 MB) and reused:
# the script does nothing to the base when the image exists.
#
# Environment:
#   CONTAINER_ENGINE  podman (default) or docker
#   BASE              build on this image instead of the local base (e.g. python:3.11.11-slim-bookworm)
#   DEBIAN_MIRROR     debootstrap's mirror (default: the host apt's Debian mirror)
#   PIP_CERT          CA bundle pip inside the build trusts (default: the host pip's, if any)
#   GATEWAY_IMAGE, SIM_IMAGE   tags (default loragate-gateway:local, loragate-sim:local)
#
# Needs root for debootstrap (CI runs as root); scripts/install_podman.sh installs the tools.
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE=${CONTAINER_ENGINE:-podman}
LOCAL_BASE=localhost/loragate-base:bookworm-py311
GATEWAY_IMAGE=${GATEWAY_IMAGE:-loragate-gateway:local}
SIM_IMAGE=${SIM_IMAGE:-loragate-sim:local}

log() { echo "build_images: [${SECONDS}s] $*" >&2; }

debian_mirror() {
    # The first Debian mirror in the host's apt sources (deb822 or one-line format).
    local uri
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' |
        grep -v security | head -n1 || true)
    if [[ -z "$uri" ]]; then
        uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
            awk '$3 !~ /security/ {print $2}' | grep -i debian | head -n1 || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

make_local_base() {
    if "$ENGINE" image exists "$LOCAL_BASE" 2>/dev/null ||
        "$ENGINE" image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
        return
    fi
    local mirror rootfs
    mirror=${DEBIAN_MIRROR:-$(debian_mirror)}
    rootfs=$(mktemp -d /var/tmp/loragate-base.XXXXXX)
    log "making $LOCAL_BASE with debootstrap from $mirror"
    if ! debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
        tail -n 20 "$rootfs.log" >&2
        rm -rf "$rootfs" "$rootfs.log"
        exit 1
    fi
    # What an image does not need: downloaded packages, apt lists, docs, man pages, locales.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
    tar -C "$rootfs" -c . | "$ENGINE" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        -q - "$LOCAL_BASE" >/dev/null
    rm -rf "$rootfs" "$rootfs.log"
}

if [[ -z "${BASE:-}" ]]; then
    # Two builds at once (two CI jobs, a developer and a test) make the base once.
    exec 9>/var/tmp/loragate-base.lock
    flock 9
    make_local_base
    flock -u 9
    BASE=$LOCAL_BASE
fi

build_args=(--build-arg "BASE=$BASE" -f Dockerfile)
if [[ "$ENGINE" == podman ]]; then
    build_args+=(--format docker) # OCI images have no HEALTHCHECK: keep the Dockerfile's
fi
# pip inside the build goes out on the host's network and trusts the host pip's CA bundle
# (a TLS-intercepting proxy's CA, where there is one).
build_args+=(--network host)
cert=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
cert=${cert:-/etc/ssl/certs/ca-certificates.crt}
if [[ -f "$cert" ]]; then
    build_args+=(--secret "id=pip-ca,src=$cert")
fi

build() {
    # The builder's output goes to a log, shown when a build fails.
    local out
    out=$(mktemp "${TMPDIR:-/tmp}/loragate-build.XXXXXX")
    if ! "$ENGINE" build "${build_args[@]}" "$@" . >"$out" 2>&1; then
        tail -n 40 "$out" >&2
        log "build failed (log: $out)"
        exit 1
    fi
    rm -f "$out"
}

log "building $SIM_IMAGE and $GATEWAY_IMAGE on $BASE"
build --target sim -t "$SIM_IMAGE"
build -t "$GATEWAY_IMAGE"
log "built $SIM_IMAGE and $GATEWAY_IMAGE"
