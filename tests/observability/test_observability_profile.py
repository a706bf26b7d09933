"""Per-step resource profiles: CPU, peak RSS and I/O of a step AND its children (the zygote's supervisor
reaps the whole subtree), in summary.json, the JSON summary line and the --profile table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from obs_testlib import REPO, base_env

from runnerlib.execution.process import run_process
from runnerlib.observability.profile import merge_usage, profile_table
from runnerlib.security.registry import SecretRegistry

# The work happens in a grandchild (sh -> python3), and in a daemon the step leaves behind.
CHILD_WORK = ("python3 -c \"import os; x = bytearray(64 << 20); [i * i for i in range(300000)]; "
              "f = open(os.devnull, 'wb'); [f.write(b'x' * 65536) for _ in range(80)]\"")


def test_run_process_profiles_the_step_and_its_children() -> None:
    result = run_process(f"{CHILD_WORK}; echo done", registry=SecretRegistry())
    res = result.resources
    assert result.exit_code == 0 and res is not None
    assert res["max_rss_bytes"] > 64 << 20            # the grandchild's peak
    assert res["cpu_user_seconds"] + res["cpu_system_seconds"] > 0.01
    if os.geteuid() == 0:  # unprivileged: the supervisor's /proc/self/io is root's (see profile.py)
        assert res["write_bytes"] >= 80 * 65536        # through write(2), by the grandchild
    assert res["output_bytes"] == len(b"done\n")


def test_summary_json_and_profile_table(ws: Path) -> None:
    (ws / "job.yaml").write_text(f"name: prof\nsteps:\n  heavy:\n    command: \"{CHILD_WORK.replace(chr(34), chr(92) + chr(34))}\"\n"
                                 "  light:\n    command: \"true\"\n")
    r = subprocess.run([sys.executable, "-m", "runnerlib.cli", "run-job", "--workspace-root", str(ws), "--profile",
                        "--log-format", "json", str(ws / "job.yaml")], env=base_env(), cwd=REPO,
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stdout.decode()[-2000:] + r.stderr.decode()
    summary = json.loads((ws / "artifacts" / "logs" / "summary.json").read_text())
    steps = {s["name"]: s for s in summary["steps"]}
    assert steps["heavy"]["resources"]["max_rss_bytes"] > 64 << 20
    assert steps["light"]["resources"]["max_rss_bytes"] < 64 << 20
    final = [json.loads(line) for line in r.stdout.decode().splitlines() if '"stream": "summary"' in line]
    assert final and final[0]["steps"][0]["resources"]["cpu_user_seconds"] >= 0
    assert "PEAK-RSS" not in r.stdout.decode()  # JSON output stays JSON: the profile is in the summary line


def test_attempts_add_up_and_the_peak_is_the_larger() -> None:
    a = {"cpu_user_seconds": 1.0, "max_rss_bytes": 100, "read_bytes": 5}
    b = {"cpu_user_seconds": 0.5, "max_rss_bytes": 80, "read_bytes": 7}
    assert merge_usage(a, b) == {"cpu_user_seconds": 1.5, "max_rss_bytes": 100, "read_bytes": 12}
    assert merge_usage(None, b) == b and merge_usage(a, None) == a and merge_usage(None, None) is None

    class R:
        name, resources = "s", a

    assert "s" in profile_table([R()]) and profile_table([]) == ""
