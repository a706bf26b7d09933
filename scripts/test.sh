#!/usr/bin/env bash
# The whole test suite: as root (as CI runs it), then, when root, the tests that do not need root again as
# an unprivileged uid, so that both identities are covered in one `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

"$PY" -m pytest -q -n 2 --dist loadfile tests "$@"

if [ "$(id -u)" = 0 ] && [ -z "${RUNNERLIB_SKIP_UNPRIVILEGED:-}" ]; then
    echo "== again as uid 65534 (tests that do not need root) =="
    home=$(mktemp -d /tmp/runnerlib-unpriv.XXXXXX)
    chown 65534:65534 "$home"
    setpriv --reuid=65534 --regid=65534 --clear-groups \
        env HOME="$home" TMPDIR="$home" PYTHONDONTWRITEBYTECODE=1 \
        "$PY" -m pytest -q -n 2 --dist loadfile -p no:cacheprovider -m "not root" tests "$@"
    rm -rf "$home"
fi
