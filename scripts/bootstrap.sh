#!/usr/bin/env bash
# Creates .venv and installs everything runnerlib needs, Debian packages included, on a fresh Debian
# machine as root. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# /usr/bin/python3 (not a pyenv shim under /root) so that the venv's interpreter can also be executed by
# the unprivileged uid that untrusted steps and the non-root tests use.
PY=/usr/bin/python3
need=()
# chromium, prometheus-pushgateway: the observability tests (HTML report, a real Pushgateway).
# bubblewrap: the peer bench/bench_spawn.py measures against. podman, runc, busybox-static, debootstrap: container mode and the runner image (docs/containers.md).
# xxd, bsdextrautils (hexdump): the masking tests dump secrets with the real tools.
for pkg in python3 python3-venv python3-dev gcc make libcap-dev git mercurial subversion tar gzip bzip2 xz-utils \
           podman runc fuse-overlayfs buildah conmon catatonit busybox-static debootstrap nftables \
           bubblewrap chromium prometheus-pushgateway xxd bsdextrautils; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "bootstrap: missing Debian packages: ${need[*]} (run as root, or install them)" >&2
        exit 1
    fi
    echo "bootstrap: installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

stamp=.venv/.installed
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev]'
    touch "$stamp"
fi

# Podman on this kind of machine needs runc, cgroupfs and ulimits within the hard nofile limit (crun and the
# defaults fail: docs/containers.md). A drop-in of the project's own, installed once, as root only.
conf=/etc/containers/containers.conf.d/50-runnerlib.conf
if [ "$(id -u)" = 0 ] && command -v podman >/dev/null && ! cmp -s images/containers.conf "$conf"; then
    mkdir -p "$(dirname "$conf")"
    cp images/containers.conf "$conf"
fi
