#!/usr/bin/env bash
# Runs every atheris harness in fuzz/ for a bounded number of runs (FUZZ_RUNS, default 20000 each).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${FUZZ_RUNS:-20000}
for h in fuzz/fuzz_*.py; do
    echo "== $h ($runs runs)"
    .venv/bin/python "$h" -atheris_runs="$runs"
done
