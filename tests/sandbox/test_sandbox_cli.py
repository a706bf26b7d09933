"""run_untrusted from a trusted script, and the CLI: sandbox probe / policy / exec, audit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from sandbox_testlib import CHECKOUT, SECRET, STEP_PYTHON, fragments

RUNNERLIB = [sys.executable, "-m", "runnerlib.cli"]


def _env(ws, **extra):
    return {"PATH": "/usr/bin:/bin", "DEPLOY_TOKEN": SECRET, "REACTORCIDE_SOURCE_DIR": str(ws.src),
            "REACTORCIDE_CI_SOURCE_DIR": str(ws.ci), "PYTHONPATH": CHECKOUT, **extra}


def test_run_untrusted_from_a_trusted_script(workspace):
    script = textwrap.dedent(f"""
        import runnerlib
        r = runnerlib.run_untrusted(["{STEP_PYTHON}", "-I", "-c",
            "import os; print('{SECRET}'); print(os.environ.get('DEPLOY_TOKEN')); open('{workspace.ci}/x','w')"],
            cwd="{workspace.src}", timeout=60)
        print("EXIT", r.exit_code)
        print(r.output)
    """)
    out = subprocess.run([sys.executable, "-c", script], env=_env(workspace), capture_output=True, text=True,
                         timeout=120)
    assert "EXIT 1" in out.stdout, out
    assert "***" in out.stdout and "None" in out.stdout and "PermissionError" in out.stdout
    for frag in fragments(SECRET):
        assert frag not in out.stdout + out.stderr
    assert (workspace.ci / "x").read_text() == "original"


def test_cli_sandbox_exec(workspace):
    out = subprocess.run([*RUNNERLIB, "sandbox", "exec", "--workspace", str(workspace.root), "--",
                          "sh", "-c", f"echo {SECRET}; echo $DEPLOY_TOKEN; exit 7"],
                         env=_env(workspace), capture_output=True, text=True, timeout=120)
    assert out.returncode == 7, out
    assert out.stdout.splitlines() == ["***", ""]


def test_cli_probe_and_policy(workspace):
    out = subprocess.run([*RUNNERLIB, "sandbox", "probe", "--json"], capture_output=True, text=True,
                         env=_env(workspace))
    assert "landlock_abi" in json.loads(out.stdout)
    out = subprocess.run([*RUNNERLIB, "sandbox", "policy", "--workspace", str(workspace.root)],
                         capture_output=True, text=True, env=_env(workspace))
    assert f"{workspace.root}/ci" in out.stdout and "on this machine" in out.stdout


def test_cli_audit(workspace):
    proc = subprocess.Popen(["sh", "-c", "sleep 30", SECRET], env={"PATH": "/usr/bin:/bin"})
    try:
        out = subprocess.run([*RUNNERLIB, "audit", "--pid", str(proc.pid), "--json"], capture_output=True,
                             text=True, env=_env(workspace))
        assert out.returncode == 1, out
        report = json.loads(out.stdout)
        assert report["findings"][0]["where"] == "cmdline" and report["findings"][0]["entry"] == "***"
        assert SECRET not in out.stdout
    finally:
        proc.kill()
        proc.wait()
    clean = subprocess.Popen(["sleep", "30"], env={"PATH": "/usr/bin:/bin"})
    try:
        out = subprocess.run([*RUNNERLIB, "audit", "--pid", str(clean.pid)], capture_output=True, text=True,
                             env=_env(workspace))
        assert out.returncode == 0 and "no secret exposed" in out.stdout, out
    finally:
        clean.kill()
        clean.wait()
