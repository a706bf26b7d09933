#!/usr/bin/env bash
# Runs every atheris harness in fuzz/ for a bounded number of runs (FUZZ_RUNS, default 20000 each), on inputs up to
# FUZZ_MAX_LEN bytes from the first run (libFuzzer's default grows them from a few bytes: thousands of runs went by
# on inputs too short to hold a secret and a text; at 1 KiB the masker's harness reached its deeper checks in a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${FUZZ_RUNS:-20000}
max_len=${FUZZ_MAX_LEN:-1024}
for h in fuzz/fuzz_*.py; do
    echo "== $h ($runs runs)"
    .venv/bin/python "$h" -atheris_runs="$runs" -max_len="$max_len" -len_control=0
done
