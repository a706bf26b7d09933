#!/usr/bin/env bash
# Builds the runner image offline: a Debian base made here with debootstrap (from the configured Debian
# mirror, the one registry reachable), then images/runner/Containerfile with runnerlib's wheels COPYed in.
#
#   bash images/build.sh [python3.11|node20]      (make image VARIANT=...)
#
# Tags: localhost/reactorcide/base:bookworm and localhost/reactorcide/runner:<variant> (python3.11 is also
# :latest). ENGINE=docker uses Docker instead of Podman. Needs root (debootstrap, a rootful engine).
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT=${1:-${VARIANT:-python3.11}}
ENGINE=${ENGINE:-podman}
BASE=localhost/reactorcide/base:bookworm
IMAGE=localhost/reactorcide/runner:$VARIANT
PY=${PY:-.venv/bin/python}

case "$VARIANT" in
    python3.11|node20) ;;
    *) echo "images/build.sh: unknown variant $VARIANT (python3.11 or node20)" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "images/build.sh: needs root (debootstrap and a rootful $ENGINE)" >&2; exit 1; }
command -v "$ENGINE" >/dev/null || { echo "images/build.sh: $ENGINE is not installed" >&2; exit 1; }

work=build/image
rm -rf "$work"
mkdir -p "$work/wheels" "$work/extra"

if ! "$ENGINE" image inspect "$BASE" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || { echo "images/build.sh: debootstrap is not installed" >&2; exit 1; }
    mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
    mirror=${mirror:-$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)}
    mirror=${mirror:-http://deb.debian.org/debian}
    rootfs=$(mktemp -d /tmp/runnerlib-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    echo "image: debootstrap bookworm from $mirror"
    debootstrap --variant=minbase --include=python3,python3-venv,git,ca-certificates bookworm "$rootfs" \
        "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "$ENGINE" import - "$BASE" >/dev/null 2>&1
fi

echo "image: wheels of runnerlib and its dependencies"
"$PY" -m pip wheel -q --wheel-dir "$work/wheels" . >"$work/wheels.log" 2>&1 || { tail -20 "$work/wheels.log" >&2; exit 1; }

if [ "$VARIANT" = node20 ]; then
    node=${NODE:-$(command -v node || true)}
    [ -n "$node" ] && "$node" --version | grep -q '^v20\.' || {
        echo "images/build.sh: the node20 variant copies a Node.js 20 binary: set NODE=/path/to/node (v20)" >&2
        exit 1; }
    cp "$node" "$work/extra/node"
fi

echo "image: building $IMAGE"
build=("$ENGINE" build)
[ "$ENGINE" = docker ] && export DOCKER_BUILDKIT=0
"${build[@]}" --network=none --build-arg "BASE=$BASE" --build-arg "VARIANT=$VARIANT" -t "$IMAGE" \
    -f images/runner/Containerfile "$work" >"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; exit 1; }
[ "$VARIANT" = python3.11 ] && "$ENGINE" tag "$IMAGE" localhost/reactorcide/runner:latest
echo "image: $IMAGE"
