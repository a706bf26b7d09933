#!/usr/bin/env bash
# Runs every benchmark in bench/; each prints its figures next to a baseline measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
for b in bench/bench_*.py; do
    echo "== $b"
    .venv/bin/python "$b"
done
