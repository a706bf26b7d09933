"""`cpus` in a job: an untrusted step's own limit runs where a cgroup cpu controller is writable; a job-wide
`--limit cpus=` reaches trusted steps too, which refuse it with the reason (no cgroup of their own)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from runnerlib import Job, get_config
from runnerlib.plugins import PluginManager
from runnerlib.runner import JobRunner
from runnerlib.security import cgroups
from runnerlib.security.limits import StepLimits


def _run(ws: Path, job: Job, **settings: object) -> tuple[int, str]:
    (ws / "src").mkdir(exist_ok=True)
    os.chmod(ws / "src", 0o777)
    out = io.BytesIO()
    runner = JobRunner(get_config(environ={}, workspace_root=str(ws), **settings), job, plugins=PluginManager(),
                       out=out, environ=dict(os.environ), handle_signals=False)
    return runner.run(), out.getvalue().decode()


def test_untrusted_step_with_cpus(ws: Path) -> None:
    job = Job("cpus")
    job.add_step("build", "echo built", trust="untrusted", limits=StepLimits(cpus="500m"))
    code, out = _run(ws, job)
    if "cpu" in cgroups.available():
        assert code == 0 and "built" in out, out
    else:  # fail closed: no rlimit caps CPU bandwidth
        assert code != 0 and "cpus limit 0.5 CPUs needs a writable cgroup cpu controller" in out, out


def test_job_wide_cpus_is_refused_by_trusted_steps(ws: Path) -> None:
    if "cpu" not in cgroups.available():
        pytest.skip("no writable cgroup cpu controller: the untrusted step would be refused too")
    job = Job("cpus-job")
    job.add_step("untrusted", "echo ran-untrusted", trust="untrusted")
    job.add_step("trusted", "echo ran-trusted", depends_on=["untrusted"])
    code, out = _run(ws, job, limits=["cpus=1"])
    assert code != 0 and "[untrusted] ran-untrusted" in out and "[trusted] ran-trusted" not in out, out
    assert "limits cpus: applies to untrusted steps only" in out, out
