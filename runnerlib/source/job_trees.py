"""Per job: which tree each step works on, and what crosses from untrusted steps back to trusted ones.

The runner asks this object, for every step: where it runs, which variables point it at its source tree, and
(trusted steps) how its command is wrapped; and tells it when an untrusted step has ended. It keeps the job's
state: the untrusted copy (runnerlib.source.pristine), whether the hand-over area needs cleaning
(runnerlib.source.handover), and whether trusted steps can get /job/ci read-only (runnerlib.security.cilock).
See docs/sandbox.md, "Pristine source, the hand-over area and the immutable CI tree".
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runnerlib.security import cilock
from runnerlib.security.paths import Workspace
from runnerlib.source import copy_secrets, handover, pristine

# log(message, step_name, level)
Log = Callable[[str, str, str], None]


class JobTrees:
    """The trees of one job's steps. `config` is the runner's JobConfig (read each time: plugins may replace it)."""

    def __init__(self, workspace: Callable[[], Workspace], log: Log,
                 holds_secret: Callable[[bytes], bool] | None = None) -> None:
        self._workspace = workspace
        self._log = log
        # Files trusted steps write into src from now on are checked for secrets when the copy is made
        # (runnerlib.source.copy_secrets); `holds_secret`: the job registry's masker changes the bytes.
        self._holds_secret = holds_secret
        # Less a margin: file timestamps come from the kernel's coarse clock, up to a tick behind time.time().
        self._since = time.time() - 0.05
        self._lock = threading.Lock()
        self.copy: pristine.UntrustedCopy | None = None
        # An untrusted step ran since the hand-over area was last cleaned (and taken over); None until the first
        # trusted step asks: then whether an earlier job's untrusted steps used this workspace's area (see _clean).
        self._dirty: bool | None = None
        self._running = 0  # untrusted steps started and not yet ended: their files are theirs until they end
        self._ci_lock_ok: bool | None = None

    # -- untrusted steps ------------------------------------------------------------------------------------
    def untrusted_env(self, config: Any, step_name: str, owner: tuple[int, int] | None) -> dict[str, str]:
        """Make (once per job, before the first untrusted step) the untrusted copy of the source tree; return the
        variables that point an untrusted step at it. `owner`: the sandbox uid when the runner is root."""
        with self._lock:
            if self.copy is None:
                src = config.code_dir or str(Path(config.workspace_root) / "src")
                copy = pristine.untrusted_copy(self._workspace(), src, owner=owner)
                made = f"{copy.files} files copied in {copy.seconds:.2f}s" if copy.created else "made earlier"
                self._log(f"untrusted steps work on their own copy of the source tree: {copy.path} ({made}); "
                          f"{config.code_dir} stays as prepared", step_name, "info")
                if copy.created and self._holds_secret is not None:
                    left_out = copy_secrets.leave_out_secret_files(self._workspace(), src, copy.path,
                                                                   since=self._since, holds_secret=self._holds_secret)
                    for rel in left_out:
                        self._log(f"left out of the untrusted copy: {handover.shown_name(rel)} (a trusted step "
                                  "wrote a secret into it)", step_name, "warning")
                self.copy = copy
        path = self.copy.path
        env = {"REACTORCIDE_SOURCE_DIR": path, "REACTORCIDE_CODE_DIR": path}
        if config.job_dir and config.code_dir:
            env["REACTORCIDE_JOB_DIR"] = pristine.in_copy(config.job_dir, config.code_dir, path)
        return env

    def untrusted_started(self) -> None:
        """An untrusted step is about to get its files (call after_untrusted when it has ended, whatever happened)."""
        with self._lock:
            self._running += 1

    def after_untrusted(self, config: Any, step_name: str) -> None:
        """An untrusted step ended: clean the hand-over area now. While other untrusted steps still run, what they
        write stays theirs (only links and special files go): as root, the take-over waits for the last one."""
        with self._lock:
            self._running = max(0, self._running - 1)
        self._dirty = True
        self._clean(config, step_name)

    # -- trusted steps --------------------------------------------------------------------------------------
    def trusted_command(self, config: Any, command: str | list[str], step_name: str) -> str | list[str]:
        """Before a trusted step: the hand-over area cleaned again if untrusted steps ran, and (root runner) the
        command wrapped so that it sees the CI tree read-only, once a probe showed a mount namespace works."""
        if self._dirty is None:
            self._dirty = self._used_by_untrusted_steps(config)
        if self._dirty:
            self._clean(config, step_name)
        ci = config.ci_dir
        if os.geteuid() != 0 or not ci or not os.path.isdir(ci):
            return command
        with self._lock:
            if self._ci_lock_ok is None:
                probe = subprocess.run(cilock.wrap(["/bin/true"], [ci]), env={}, capture_output=True,
                                       stdin=subprocess.DEVNULL, check=False)
                self._ci_lock_ok = probe.returncode == 0
                if not self._ci_lock_ok:
                    why = probe.stderr.decode("utf-8", "replace").strip().rpartition("(")[2].rstrip(")")
                    self._log(f"{ci} stays writable for trusted steps (root ignores file modes): no mount "
                              f"namespace here ({why or 'exit ' + str(probe.returncode)})", step_name, "warning")
        if not self._ci_lock_ok:
            return command
        return cilock.wrap(["/bin/sh", "-c", command] if isinstance(command, str) else list(command), [ci])

    # -- both -----------------------------------------------------------------------------------------------
    def base(self, config: Any, trusted: bool) -> str:
        """The job directory as a step sees it: a working_dir is relative to it (the copy's, for untrusted steps)."""
        base = str(config.job_dir or config.code_dir or config.workspace_root)
        if not trusted and self.copy is not None and config.code_dir:
            base = pristine.in_copy(base, config.code_dir, self.copy.path)
        return base

    def cwd(self, config: Any, working_dir: str | None, trusted: bool) -> str:
        """Where a step runs. Untrusted steps: in their own copy of the source tree. Trusted steps, when no job_dir
        was named: the CI tree when the job has one (the source tree is the pull request's: a json.py shipped there
        would shadow the standard library for `python3 -c`), else the job directory (the pristine source tree).
        A step's working_dir keeps its meaning (relative to the job directory)."""
        base = config.job_dir or config.code_dir or config.workspace_root
        if working_dir:
            where = os.path.join(base, working_dir) if not os.path.isabs(working_dir) else working_dir
        elif trusted and config.ci_dir and _job_dir_is_default(config) and _has_ci_tree(config):
            where = config.ci_dir
        else:
            where = str(base)
        if not trusted and self.copy is not None and config.code_dir:
            where = pristine.in_copy(where, config.code_dir, self.copy.path)
        return where

    def untrusted_source(self) -> str | None:
        """The untrusted copy's path once made (the sandbox's writable source grant), else None."""
        return self.copy.path if self.copy is not None else None

    def _used_by_untrusted_steps(self, config: Any) -> bool:
        # An earlier job's untrusted steps left their step-file directory (execution/step_protocol.py's
        # STEPS_DIR) in the area; a runner killed during such a step never cleaned what the step left there.
        return self._workspace().exists(os.path.join(_area(config), ".runnerlib-steps"))

    def _clean(self, config: Any, step_name: str) -> None:
        area = _area(config)
        with self._lock:
            # Taking over a running untrusted step's files (its step files, the directory it writes) would make
            # it fail with EACCES; the clean-up after the last one takes them over.
            take_over = self._running == 0
            handover.sanitise_hand_over(self._workspace(), area, take_over=take_over,
                                        warn=lambda line: self._log(line, step_name, "warning"))
            self._dirty = not take_over


def _area(config: Any) -> str:
    return config.artifacts_dir or str(Path(config.workspace_root) / "artifacts")


def _job_dir_is_default(config: Any) -> bool:
    # A job_dir someone named (--job-dir, the worker's REACTORCIDE_JOB_DIR) is kept as given, unless it names the
    # source tree itself: that is the default spelled out (the worker sets REACTORCIDE_JOB_DIR for every job),
    # and trusted steps would run in the pull request's tree again (a json.py there shadows the stdlib).
    if config.job_dir is None or config.origin("job_dir").startswith("default"):
        return True
    return bool(config.code_dir) and os.path.normpath(config.job_dir) == os.path.normpath(config.code_dir)


def _has_ci_tree(config: Any) -> bool:
    return (config.ci_source_type or "none") != "none" or bool(config.ci_dir and os.path.isdir(config.ci_dir))
