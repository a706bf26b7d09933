"""The network policy end to end: the `network:` key of a job file's step and `runnerlib run --network`, with
the same step without the key (or option) as the control. Servers only on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from netlib import PROBE, write_probe
from sandbox_testlib import IS_ROOT, STEP_PYTHON, caps, needs_landlock

from runnerlib.security import network
from runnerlib.testing import reachable_tempdir

pytestmark = [needs_landlock, pytest.mark.skipif(
    network.netns_available(IS_ROOT, caps.user_namespaces) is not None, reason="no network namespaces here")]
REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_")}
    return subprocess.run([sys.executable, "-m", "runnerlib.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_job_file_network_key_per_step(server):
    with reachable_tempdir("rl-netjob-") as ws:
        probe = write_probe(ws)
        steps = [
            {"name": "default", "command": [STEP_PYTHON, str(probe), str(server), "default"], "trust": "untrusted"},
            {"name": "closed", "command": [STEP_PYTHON, str(probe), str(server), "closed"], "trust": "untrusted",
             "network": "none", "depends_on": ["default"]},
            {"name": "listed", "command": [STEP_PYTHON, str(probe), str(server), "listed"], "trust": "untrusted",
             "network": [f"127.0.0.1:{server}"], "depends_on": ["closed"]},
            {"name": "trusted-closed", "command": [STEP_PYTHON, str(probe), str(server), "trusted-closed"],
             "network": "none", "depends_on": ["listed"]},
        ]
        job_file = ws / "ci" / "job.json"
        job_file.write_text(json.dumps({"steps": steps}))
        proc = _cli("run-job", str(job_file), "--workspace-root", str(ws))
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out
        for want in ("REACHED-default", "BLOCKED-closed", "REACHED-listed", "BLOCKED-trusted-closed"):
            assert want in out, (want, out)


def test_job_file_bad_network_value_is_refused_naming_the_field():
    with reachable_tempdir("rl-netjob-") as ws:
        job_file = ws / "job.yaml"
        job_file.write_text("steps:\n  - name: s\n    command: 'true'\n    network: [169.254.169.254:80]\n")
        proc = _cli("validate", str(job_file))
        assert proc.returncode == 78, proc.stdout + proc.stderr
        assert "network" in proc.stderr and "metadata" in proc.stderr, proc.stderr


def test_run_network_option_applies_to_the_job_steps(server):
    with reachable_tempdir("rl-netrun-") as ws:
        cmd = ["--workspace-root", str(ws), "--untrusted", "--", STEP_PYTHON, "-c", PROBE, str(server), "cli"]
        opened = _cli("run", *cmd)
        assert "REACHED-cli" in opened.stdout + opened.stderr, opened.stdout + opened.stderr  # control
        closed = _cli("run", "--network", "none", *cmd)
        assert "BLOCKED-cli" in closed.stdout + closed.stderr, closed.stdout + closed.stderr
        bad = _cli("run", "--network", "bogus", *cmd)
        assert bad.returncode == 78 and "network" in bad.stderr, bad.stderr
