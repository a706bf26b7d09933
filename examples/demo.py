#!/usr/bin/env python3
"""`make demo`: a real dual-source job, end to end, in a temporary directory.

1. examples/ci (trusted CI code) and examples/project (untrusted project code) become two local git
   repositories;
2. `runnerlib run` checks the CI repository out into <workspace>/ci (locked read-only) and the project into
   <workspace>/src, loads the CI repository's plugin, and runs the CI script as the job's trusted step;
3. the CI script registers a fresh secret over the socket, prints it in several encodings (all masked),
   runs the project's tests sandboxed with runnerlib.run_untrusted (the project's "sneaky" test shows what
   a malicious pull request can reach), and triggers a follow-up job;
4. the demo then checks its own claim: no secret appears anywhere in the output or the step logs.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"})


def make_repo(source: Path, dest: Path) -> str:
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__"))
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "-c", "user.name=demo", "-c", "user.email=demo@example.invalid", "commit", "-q", "-m", "demo")
    return f"file://{dest}"


def banner(text: str) -> None:
    print(f"\n\033[1m### {text}\033[0m" if sys.stdout.isatty() else f"\n### {text}", flush=True)


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="runnerlib-demo-"))
    os.chmod(tmp, 0o755)  # the sandboxed step (uid 65534 under root) must reach the workspace
    try:
        ci_url = make_repo(HERE / "ci", tmp / "repos" / "ci")
        project_url = make_repo(HERE / "project", tmp / "repos" / "project")
        workspace = tmp / "workspace"
        worker_secret = "wkr_" + secrets.token_urlsafe(16)
        command = [
            sys.executable, "-m", "runnerlib.cli", "run",
            "--workspace-root", str(workspace),
            "--ci-source-type", "git", "--ci-source-url", ci_url, "--ci-source-ref", "main",
            "--source-type", "git", "--source-url", project_url, "--source-ref", "main",
            "--job-name", "test",
            "--job-command", f"{sys.executable} {workspace}/ci/pipeline.py",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_")}
        # A secret handed over by the worker, as an ordinary variable with a secret-looking name.
        env.update({"DEMO_API_TOKEN": worker_secret, "REACTORCIDE_JOB_ID": "demo-1",
                    "REACTORCIDE_BRANCH": "main", "PYTHONPATH": str(REPO),
                    "DEMO_EVIDENCE_FILE": str(tmp / "evidence")})
        banner("runnerlib run  (trusted CI from " + ci_url + ", untrusted project from " + project_url + ")")
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp)
        captured = bytearray()
        assert proc.stdout is not None
        for line in proc.stdout:
            captured += line
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
        code = proc.wait()

        banner(f"exit status {code}")
        triggers = workspace / "triggers.json"
        if triggers.exists():
            banner("triggers.json (written by the trusted script; the runner signed and printed it)")
            print(triggers.read_text())
        banner("checking the claim: no secret anywhere in the output or the step logs")
        texts = [bytes(captured)] + [p.read_bytes() for p in (workspace / "artifacts").rglob("*") if p.is_file()]
        if triggers.exists():
            texts.append(triggers.read_bytes())
        evidence = tmp / "evidence"
        fresh = evidence.read_text() if evidence.exists() else None
        checked = [s for s in (worker_secret, fresh) if s]
        leaked = [s for s in checked if any(s.encode() in t or s[4:14].encode() in t for t in texts)]
        if leaked:
            print("LEAK: a secret appears in the output", file=sys.stderr)
            return 1
        print(f"ok: neither the worker's secret nor the fresh token appears in the {sum(len(t) for t in texts)} "
              "bytes of output, step logs and triggers")
        return code
    finally:
        if os.environ.get("RUNNERLIB_DEMO_KEEP"):
            print(f"(kept {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
