"""The README's example job (examples/pr-check.yaml) does what the README shows: the token is masked in every
form printed, the untrusted step sees no token and cannot write the trusted tree, the condition skips deploy."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOKEN = "s3cr3t-t0ken-42"


def test_readme_job_file() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="rl-readme-"))
    try:
        _run_example(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_example(tmp: Path) -> None:
    os.chmod(tmp, 0o755)  # the untrusted step (uid 65534 under root) must reach the workspace
    ws = tmp / "ws"
    (ws / "ci").mkdir(parents=True)
    pipeline = ws / "ci" / "pipeline.sh"
    pipeline.write_text("echo trusted\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_")}
    env["DEPLOY_TOKEN"] = TOKEN
    r = subprocess.run([sys.executable, "-m", "runnerlib.cli", "run-job", str(REPO / "examples" / "pr-check.yaml"),
                        "--workspace-root", str(ws), "--var", "branch=feature-x"],
                       env=env, capture_output=True, timeout=120)
    out = (r.stdout + r.stderr).decode()
    assert r.returncode == 0, out
    assert "[lint] linting with token ***" in out
    assert "PR code sees token=[nothing]" in out
    assert "deploy      skipped" in out
    assert pipeline.read_text() == "echo trusted\n"
    b64 = base64.b64encode(TOKEN.encode() + b"\n").decode()
    for text in (TOKEN, b64[:-4]):
        for i in range(len(text) - 5):
            assert text[i:i + 6] not in out, text[i:i + 6]
