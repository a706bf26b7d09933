"""`make demo` in a test: the dual-source example runs end to end and checks its own no-leak claim."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_and_leaks_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_")}
    r = subprocess.run([sys.executable, str(REPO / "examples" / "demo.py")], capture_output=True, env=env,
                       timeout=180, cwd=REPO)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "ok: neither the worker's secret nor the fresh token appears" in out
    assert "plain:      ***" in out and "base64:     ***" in out
    assert "sneaky: secret-looking variables visible to the PR code: none" in out
    assert "sneaky: writing to the trusted CI tree: refused" in out
    assert "triggered follow-up job deploy-staging" in out
    assert '"job_name": "deploy-staging"' in out
