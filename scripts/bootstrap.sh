#!/usr/bin/env bash
# Creates .venv and installs everything runnerlib needs, Debian packages included, on a fresh Debian
# machine as root. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# /usr/bin/python3 (not a pyenv shim under /root) so that the venv's interpreter can also be executed by
# the unprivileged uid that untrusted steps and the non-root tests use.
PY=/usr/bin/python3
need=()
# chromium and prometheus-pushgateway: the observability tests render the HTML report and push metrics to a
# real Pushgateway (tests/observability).
for pkg in python3 python3-venv python3-dev gcc make libcap-dev git mercurial subversion tar gzip bzip2 xz-utils \
        chromium prometheus-pushgateway; do
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
