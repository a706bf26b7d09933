"""A job's view of an untrusted step's own world: what its status line and summary say when the step left
processes behind or hit a resource limit (job-file `limits:` and `--limit` settings)."""

from __future__ import annotations

import io
import os
from pathlib import Path

from runnerlib import Job, get_config
from runnerlib.plugins import PluginManager
from runnerlib.runner import JobRunner
from runnerlib.security.limits import StepLimits


def _run(ws: Path, job: Job, **settings: object) -> tuple[int, str]:
    (ws / "src").mkdir(exist_ok=True)
    os.chmod(ws / "src", 0o777)
    config = get_config(environ={}, workspace_root=str(ws), **settings)
    out = io.BytesIO()
    runner = JobRunner(config, job, plugins=PluginManager(), out=out, environ=dict(os.environ),
                       handle_signals=False)
    return runner.run(), out.getvalue().decode()


def test_leftover_processes_are_reported_and_the_job_ends(ws: Path) -> None:
    job = Job("daemon")
    job.add_step("spawn", "(setsid sleep 300 &); echo started", trust="untrusted")
    code, out = _run(ws, job)
    assert code == 0, out
    assert "killed leftover processes: 1" in out, out


def test_a_step_limit_names_the_limit_and_a_job_limit_applies_to_every_step(ws: Path) -> None:
    job = Job("limits")
    job.add_step("big", 'head -c 2097152 /dev/zero > "$TMPDIR/f"', trust="untrusted",
                 limits=StepLimits(file_size=1 << 20))
    job.add_step("busy", "while :; do :; done", trust="untrusted", depends_on=["big"], condition="always")
    code, out = _run(ws, job, limits=["cpu_seconds=1"])
    assert code != 0
    assert "killed: file size limit 1 MiB" in out and "killed: cpu limit 1 s" in out, out
