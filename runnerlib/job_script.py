"""The Python API of a job script, as the design shows it: build a config or a Job, run it, exit with its code.

Example::

    import sys
    import runnerlib

    config = runnerlib.get_config(job_command="make test")
    sys.exit(runnerlib.run(config))          # or: runnerlib.main(config)

    job = runnerlib.Job("test-and-build")
    job.add_step("test", "pytest tests/")
    job.add_step("build", "python -m build", depends_on=["test"])
    sys.exit(job.run())

A script that drops the exit code exits 0 even when the job failed: end it with `sys.exit(...)` of the code,
or with `runnerlib.main(...)`, which runs the job and exits with its code.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from runnerlib import jobs
from runnerlib.config import JobConfig
from runnerlib.runner import run_job


class Job(jobs.Job):
    """A job built in Python (runnerlib.jobs.Job) that can run itself: `sys.exit(job.run())`."""

    def run(self, config: JobConfig | None = None, **settings: Any) -> int:
        """Run this job and return its exit code. `config` is a get_config() result; without one, keyword
        settings (JobConfig fields) are read with the environment like `runnerlib run` reads them. The job's
        name names the run (log, summary.json, REACTORCIDE_JOB_NAME)."""
        return run(config, job=self, **settings)


def run(config: JobConfig | None = None, *, job: jobs.Job | None = None, **settings: Any) -> int:
    """Run a job and return its exit code: `config` from get_config() (or settings as keywords), `job` a Job
    with steps (without one, the config's job_command / job_args is the job). Never raises for a failing job:
    the code says it (runnerlib.exit_codes)."""
    if config is not None:
        return run_job(config=config, job=job, **settings)
    return run_job(job=job, **settings)


def main(config: JobConfig | None = None, *, job: jobs.Job | None = None, **settings: Any) -> NoReturn:
    """Run a job (as `run`) and exit the process with its exit code: the last line of a job script."""
    sys.exit(run(config, job=job, **settings))
