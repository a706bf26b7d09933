"""Shared helpers and fixtures of the sandbox tests: a workspace the step's uid can reach, victims, attacks."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runnerlib.execution.process import ProcessResult, run_process
from runnerlib.security.lowlevel.prctl import PR_GET_DUMPABLE, PR_SET_DUMPABLE, prctl
from runnerlib.security.policy import SandboxPolicy
from runnerlib.security.probe import probe
from runnerlib.security.registry import SecretRegistry
from runnerlib.testing import reachable_tempdir

HERE = Path(__file__).resolve().parent
CHECKOUT = str(HERE.parent.parent)
SECRET = "s3cr3t-Vq9ZkP2wLx7Rj4Tn"
STEP_PYTHON = "/usr/bin/python3"  # reachable by uid 65534 (a venv under /root would not be)
IS_ROOT = os.geteuid() == 0
STEP_UID = 65534 if IS_ROOT else os.geteuid()



@contextlib.contextmanager
def job_root(prefix: str) -> Iterator[Path]:
    """A workspace root the step's uid can reach, with empty `src` and `ci` trees (0755), for JobRunner jobs."""
    with reachable_tempdir(prefix) as path:
        for d in ("src", "ci"):
            (path / d).mkdir()
            os.chmod(path / d, 0o755)
        yield path


@pytest.fixture(autouse=True)
def _runner_not_dumpable():
    """The test process plays the runner: like a real one (protect_runner) it is non-dumpable while it
    spawns untrusted steps; without this an unprivileged run refuses every step (tested separately).
    Restored afterwards so that other areas' tests, run in the same worker, see a normal process."""
    before = prctl(PR_GET_DUMPABLE)
    prctl(PR_SET_DUMPABLE, 0)
    yield
    prctl(PR_SET_DUMPABLE, before)


def fragments(secret: str, size: int = 6) -> list[str]:
    return [secret[i:i + size] for i in range(len(secret) - size + 1)]


@dataclass
class Workspace:
    root: Path

    @property
    def ci(self) -> Path:
        return self.root / "ci"

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    def policy(self, **kw: object) -> SandboxPolicy:
        """The workspace's policy with `src` granted as the step's tree: these tests try the sandbox's mechanisms
        on a granted tree (for_workspace grants the untrusted copy instead: test_sandbox_exec_tree.py)."""
        kw.setdefault("read_write_paths", (str(self.src), str(self.artifacts)))
        return SandboxPolicy.for_workspace(str(self.root), **kw)


@pytest.fixture
def workspace() -> Iterator[Workspace]:
    with reachable_tempdir("rl-sandbox-") as root:
        ws = Workspace(root)
        for d in (ws.ci, ws.src, ws.artifacts):
            d.mkdir()
            d.chmod(0o755)
        (ws.ci / "x").write_text("original")
        (ws.ci / "x").chmod(0o644)
        shutil.copy(HERE / "attack_script.py", ws.ci / "attack.py")
        (ws.src / "own.txt").write_text("mine")
        if IS_ROOT:
            for d in (ws.src, ws.artifacts):
                for p in [d, *d.rglob("*")]:
                    os.chown(p, STEP_UID, STEP_UID)
        yield ws


@pytest.fixture
def registry() -> SecretRegistry:
    reg = SecretRegistry()
    reg.add(SECRET, source="test")
    return reg


def attack(ws: Workspace, registry: SecretRegistry, name: str, *args: object, sandboxed: bool = True,
           policy: SandboxPolicy | None = None, env: dict[str, str] | None = None) -> tuple[str, ProcessResult]:
    """Run one attack from attack_script.py as an untrusted step (or, sandboxed=False, a trusted one)."""
    argv = [STEP_PYTHON, "-I", str(ws.ci / "attack.py"), name, *map(str, args)]
    result = run_process(argv, registry=registry, trusted=not sandboxed,
                         policy=(policy or ws.policy()) if sandboxed else None,
                         env=env if env is not None else {"PATH": "/usr/bin:/bin"},
                         cwd=str(ws.src), timeout=60, grace=1)
    lines = result.stdout.strip().splitlines()
    return (lines[-1] if lines else f"NO OUTPUT exit={result.exit_code} {result.reason} {result.stderr}"), result


class Victim:
    """A runner stand-in holding SECRET in its environment (and on argv when asked)."""

    def __init__(self, protect: bool, secret_on_argv: bool = False) -> None:
        argv = [STEP_PYTHON, "-I", str(HERE / "victim_runner.py"), CHECKOUT, "protect" if protect else "plain"]
        if secret_on_argv:
            argv.append(SECRET)
        env = {"PATH": "/usr/bin:/bin", "VICTIM_TOKEN": SECRET}
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        assert line.startswith("READY"), line
        self.pid = self.proc.pid

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture
def victim():
    made: list[Victim] = []

    def make(protect: bool = True, secret_on_argv: bool = False) -> Victim:
        v = Victim(protect, secret_on_argv)
        made.append(v)
        return v

    yield make
    for v in made:
        v.stop()


needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (to switch the step's uid / own files as root)")
caps = probe()
needs_scoping = pytest.mark.skipif(not caps.landlock_scoping, reason="needs Landlock ABI >= 6 (scoping)")
needs_landlock = pytest.mark.skipif(not caps.landlock_fs, reason="needs Landlock")
sys.path.insert(0, str(HERE))
