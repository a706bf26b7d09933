"""GitHub's step protocol for a job's steps: per-step output, env, path and summary files, what later steps
receive from them, workflow commands, and the rules that keep an untrusted step's products data.

Per attempt, the runner calls `prepare(step)` (a fresh directory, the four files, their variables:
REACTORCIDE_OUTPUT / GITHUB_OUTPUT, REACTORCIDE_ENV / GITHUB_ENV, REACTORCIDE_PATH / GITHUB_PATH,
REACTORCIDE_STEP_SUMMARY / GITHUB_STEP_SUMMARY, and a WorkflowCommands for the output pipes), runs the step,
then `collect(...)` (read strictly, parse strictly, keep the last attempt's). Later steps get, from the steps
upstream of them (execution/step_refs.upstream):

- outputs: `${{ steps.S.outputs.N }}` in commands, env values and conditions (`substitute`, `variables`);
- env file entries: in their environment (a step's own `env:` wins); path entries: prepended to PATH,
  the last written first, as GitHub does;

with the trust rules:
- a TRUSTED step never receives anything an untrusted step wrote as a command or as environment that changes
  how it runs: such env and path entries are ignored for it (with a warning naming the variables: PATH,
  LD_PRELOAD or BASH_ENV from a pull request would run its code with the secrets); its outputs reach the
  trusted step only as REACTORCIDE_UNTRUSTED_OUTPUT_<STEP>_<NAME> variables (data, under a name that says
  so), and `${{ }}` of them in a trusted command or env is refused at validation (step_refs);
- an UNTRUSTED step receives everything (it runs sandboxed): what trusted steps wrote filtered as any
  untrusted environment (no secret-named variable, no value holding a secret: runner and
  security/untrusted_env) and substituted masked; what untrusted steps wrote as written (names still
  checked): it holds nothing the step's own kind did not know, and filtering it would tell the step which
  of its guesses was a secret (`handed_on`);
- names REACTORCIDE_* and the four file variables are never taken from an env file (a step cannot move
  another step's files or the runner's context).

Where the files live: a trusted step's in the runner's private scratch directory (0700, out of the sandbox's
reach: an untrusted step running beside it cannot write a trusted step's env file); an untrusted step's in
`<artifacts>/.runnerlib-steps/<step>/` (inside what the sandbox may write, given to the sandbox uid when the
runner is root), read back through the workspace with no symlink followed. Each directory is removed once
read. Nothing read is registered as a secret; every text shown or written (outputs and annotations in
summary.json, the job's summary.md) is masked with the job's registry first.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runnerlib.execution.step_files import (
    ENV_NAME_RE,
    FILES,
    StepFileError,
    parse_assignments,
    parse_paths,
    read_step_file,
)
from runnerlib.execution.step_refs import substitute, untrusted_output_variable, upstream
from runnerlib.execution.workflow_commands import WorkflowCommands

STEPS_DIR = ".runnerlib-steps"
SUMMARY_FILE = "summary.md"
_RESERVED = {name for names in FILES.values() for name in names}


@dataclass
class StepRecord:
    """What one step left for later steps (raw values: masked only where shown)."""

    trusted: bool
    outputs: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    summary: str = ""
    annotations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class StepAttempt:
    """One attempt's files: the variables to give the step, where they are, its workflow commands."""

    step: str
    trusted: bool
    directory: str
    env: dict[str, str]
    commands: WorkflowCommands


class StepProtocol:
    """The protocol state of one job (see the module docstring).

    `workspace`: security.paths.Workspace of the job; `scratch`: the runner's private directory;
    `artifacts_dir`: absolute, inside the workspace; `owner`: (uid, gid) untrusted steps run as when the runner
    is root, else None; `warn(step, message)`: a warning in the job log (masked there).
    """

    def __init__(self, *, mask: Callable[[str], str], workspace: Any, scratch: str, artifacts_dir: str,
                 owner: tuple[int, int] | None, warn: Callable[[str, str], None], debug: bool = False) -> None:
        self.mask = mask
        self.workspace = workspace
        self.scratch = scratch
        self.artifacts_dir = artifacts_dir
        self.owner = owner
        self.warn = warn
        self.debug = debug
        self.records: dict[str, StepRecord] = {}
        self._lock = threading.Lock()

    # -- before a step ---------------------------------------------------------------------------------

    def prepare(self, step: Any) -> StepAttempt:
        """A fresh, empty set of files for an attempt of `step`."""
        trusted = step.trust == "trusted"
        if trusted:
            directory = os.path.join(self.scratch, "steps", step.name)
            shutil.rmtree(directory, ignore_errors=True)
            os.makedirs(directory, mode=0o700)
            for name in FILES:
                os.close(os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                 | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        else:
            ws = self.workspace
            parent = os.path.join(self.artifacts_dir, STEPS_DIR)
            directory = os.path.join(parent, step.name)
            ws.makedirs(parent, 0o755)
            ws.rmtree(directory)
            ws.makedirs(directory, 0o700)
            for name in FILES:
                os.close(ws.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            if self.owner is not None:
                ws.chown_tree(directory, *self.owner)
        env = {}
        for name, variables in FILES.items():
            for variable in variables:
                env[variable] = os.path.join(directory, name)
        return StepAttempt(step.name, trusted, directory, env, WorkflowCommands(self.mask, debug=self.debug))

    # -- after a step ----------------------------------------------------------------------------------

    def collect(self, attempt: StepAttempt) -> str | None:
        """Read and parse the attempt's files into the step's record; None, or the error (masked) when a file
        broke a rule (the step's files are then not used at all). The directory is removed."""
        record = StepRecord(attempt.trusted, annotations=list(attempt.commands.annotations))
        if attempt.commands.dropped:
            self.warn(attempt.step, f"{attempt.commands.dropped} annotation(s) over the limit not collected")
        error = None
        try:
            raw = self._read(attempt)
            record.outputs = parse_assignments(raw["output"], label="output file")
            env = parse_assignments(raw["env"], label="env file", names=ENV_NAME_RE)
            record.paths = parse_paths(raw["path"], label="path file")
            record.summary = self.mask(raw["summary.md"].decode("utf-8", "replace"))
            refused = sorted(n for n in env if n in _RESERVED or n.startswith("REACTORCIDE_"))
            if refused:
                self.warn(attempt.step, f"env file: not taken (reserved names): {', '.join(refused)}")
            record.env = {k: v for k, v in env.items() if k not in refused}
        except StepFileError as exc:
            error = self.mask(f"step files: {exc}")
            record = StepRecord(attempt.trusted, annotations=record.annotations)
        finally:
            self._remove(attempt)
        with self._lock:
            self.records[attempt.step] = record
        return error

    def _read(self, attempt: StepAttempt) -> dict[str, bytes]:
        if attempt.trusted:
            dir_fd = os.open(attempt.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        else:
            try:
                dir_fd = self.workspace.open_dir(attempt.directory)
            except (OSError, ValueError) as exc:
                raise StepFileError(f"the step's file directory: {getattr(exc, 'strerror', None) or exc}") from None
        try:
            return {name: read_step_file(dir_fd, name, label=f"{name.removesuffix('.md')} file")
                    for name in FILES}
        finally:
            os.close(dir_fd)

    def _remove(self, attempt: StepAttempt) -> None:
        if attempt.trusted:
            shutil.rmtree(attempt.directory, ignore_errors=True)
            return
        try:
            self.workspace.rmtree(attempt.directory)
        except (OSError, ValueError) as exc:
            self.warn(attempt.step, f"could not remove {attempt.directory}: {getattr(exc, 'strerror', None) or exc}")

    # -- for later steps -------------------------------------------------------------------------------

    def _upstream(self, step: Any, steps: Mapping[str, Any]) -> list[tuple[str, StepRecord]]:
        with self._lock:
            return [(name, self.records[name]) for name in upstream(steps, step.name) if name in self.records]

    def environment(self, step: Any, steps: Mapping[str, Any], path: str) -> dict[str, str]:
        """The variables `step` gets from upstream steps' files, PATH included (built on `path`)."""
        trusted = step.trust == "trusted"
        env: dict[str, str] = {}
        entries: list[str] = []
        for name, record in self._upstream(step, steps):
            if trusted and not record.trusted:
                for output, value in record.outputs.items():
                    env[untrusted_output_variable(name, output)] = value
                ignored = sorted(set(record.env) | ({"PATH"} if record.paths else set()))
                if ignored:
                    self.warn(step.name, f"ignored what the untrusted step {name!r} set for later steps "
                                         f"(a trusted step takes no environment from it): {', '.join(ignored)}")
                continue
            env.update(record.env)
            entries += record.paths
        if entries:
            base = env.get("PATH", path)
            env["PATH"] = ":".join(dict.fromkeys([*reversed(entries), *filter(None, base.split(":"))]))
        return env

    def handed_on(self, step: Any, steps: Mapping[str, Any]) -> dict[str, str]:
        """For an untrusted step: the variables its untrusted upstream steps wrote (GITHUB_ENV), as written. They
        hold nothing the step's own kind did not know, so they skip the secret-value filter (`known_to_step`
        of run_process): dropping one that held a secret told the step which of its guesses was one."""
        if step.trust == "trusted":
            return {}
        env: dict[str, str] = {}
        for _name, record in self._upstream(step, steps):
            if not record.trusted:
                env.update(record.env)
        return env

    def lookup(self, step: Any, steps: Mapping[str, Any]) -> Callable[[str, str], str]:
        """lookup(producer, output) for `substitute`: raw for a trusted step; for an untrusted one masked, unless
        an untrusted step produced it (it knew the value: masking it would say which guess was a secret)."""
        found = dict(self._upstream(step, steps))
        untrusted = step.trust != "trusted"

        def value(producer: str, output: str) -> str:
            record = found.get(producer)
            if record is None:
                return ""
            raw = record.outputs.get(output, "")
            return self.mask(raw) if untrusted and record.trusted else raw
        return value

    def substitute(self, step: Any, steps: Mapping[str, Any], command: Any, env: dict[str, str]) -> tuple[Any, dict[str, str]]:
        """`command` (string or argv) and `env` with the step-output references replaced."""
        lookup = self.lookup(step, steps)
        if isinstance(command, str):
            command = substitute(command, lookup)
        else:
            command = [substitute(item, lookup) for item in command]
        return command, {k: substitute(v, lookup) for k, v in env.items()}

    def variables(self, step: Any, steps: Mapping[str, Any]) -> dict[str, str]:
        """`steps.S.outputs.N` -> value, for `step`'s condition."""
        return {f"steps.{name}.outputs.{k}": v for name, record in self._upstream(step, steps)
                for k, v in record.outputs.items()}

    # -- the job's summary -----------------------------------------------------------------------------

    def fill(self, results: list[Any]) -> None:
        """Copy masked outputs, annotations and whether a summary was written into the step results."""
        for result in results:
            record = self.records.get(result.name)
            if record is not None:
                result.outputs = {k: self.mask(v) for k, v in record.outputs.items()}
                result.annotations = record.annotations
                result.summary = bool(record.summary.strip())

    def write_summary(self, order: list[str]) -> str | None:
        """`<artifacts>/summary.md`: the steps' summaries in declaration order (masked); its path, or None."""
        parts = [self.records[name].summary for name in order
                 if name in self.records and self.records[name].summary.strip()]
        if not parts:
            return None
        path = os.path.join(self.artifacts_dir, SUMMARY_FILE)
        text = "\n".join(part if part.endswith("\n") else part + "\n" for part in parts)
        try:
            # Whatever an untrusted step left under that name (a symlink, a file of its own) goes first: every
            # step has ended, and the workspace neither follows nor writes through a link.
            self.workspace.remove(path, missing_ok=True)
            self.workspace.write_text(path, self.mask(text), perms=0o644)
        except (OSError, ValueError) as exc:
            self.warn("", f"could not write the step summaries to {path}: {getattr(exc, 'strerror', None) or exc}")
            return None
        return path
