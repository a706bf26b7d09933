"""Read-only grants beyond the system directories: the runner's virtualenv (so its `python` starts in the
sandbox) and REACTORCIDE_SANDBOX_READ_ONLY_PATHS. Each is shown to fail without the grant, and a sibling
that is not granted stays unreadable."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from sandbox_testlib import Workspace

from runnerlib.execution.process import READ_ONLY_PATHS_ENV, default_policy, run_process
from runnerlib.security.policy import PolicyError
from runnerlib.security.probe import probe
from runnerlib.testing import reachable_tempdir

pytestmark = pytest.mark.skipif(probe().landlock_abi < 1, reason="needs Landlock (read grants are Landlock rules)")


def _env(ws: Workspace, **extra: str) -> dict[str, str]:
    return {"REACTORCIDE_SOURCE_DIR": str(ws.src), "REACTORCIDE_CI_SOURCE_DIR": str(ws.ci), **extra}


def _run(ws: Workspace, registry, argv: list[str], policy) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    r = run_process(argv, registry=registry, trusted=False, policy=policy, env={"PATH": "/usr/bin:/bin"},
                    cwd=str(ws.src), timeout=60, grace=1)
    return r.exit_code, r.stdout + r.stderr


def _world_reachable(path: str) -> bool:
    """Every directory above `path` enterable, and `path` readable, by others (the step's uid)."""
    parts = Path(path).resolve().parts
    dirs_ok = all(os.stat(os.path.join(*parts[:i])).st_mode & 0o001 for i in range(2, len(parts)))
    return dirs_ok and bool(os.stat(path).st_mode & 0o004)


@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="the tests do not run from a virtualenv")
def test_the_runners_venv_python_starts_in_the_sandbox(workspace: Workspace, registry) -> None:  # type: ignore[no-untyped-def]
    if not _world_reachable(os.path.join(sys.prefix, "pyvenv.cfg")):
        pytest.skip("the virtualenv is below a directory the step's uid cannot enter")
    argv = [os.path.join(sys.prefix, "bin", "python"), "-c", "print('venv-ok')"]
    code, out = _run(workspace, registry, argv, default_policy(_env(workspace)))
    assert code == 0 and "venv-ok" in out, out
    # Control: the same policy without the venv grant.
    bare = workspace.policy()
    assert os.path.normpath(sys.prefix) not in bare.read_only_paths
    code, out = _run(workspace, registry, argv, bare)
    assert code != 0 and "venv-ok" not in out


def test_listed_paths_are_readable_and_their_siblings_are_not(workspace: Workspace, registry) -> None:  # type: ignore[no-untyped-def]
    with reachable_tempdir("rl-ro-") as base:
        for name in ("tools", "private"):
            (base / name).mkdir(mode=0o755)
            (base / name / "f.txt").write_text(f"{name}-content")
            os.chmod(base / name / "f.txt", 0o644)
        argv = ["/bin/sh", "-c", f"cat {base}/tools/f.txt; cat {base}/private/f.txt"]
        code, out = _run(workspace, registry, argv,
                         default_policy(_env(workspace, **{READ_ONLY_PATHS_ENV: f"{base}/tools"})))
        assert "tools-content" in out and "private-content" not in out, out
        code, out = _run(workspace, registry, argv, default_policy(_env(workspace)))
        assert "tools-content" not in out, out  # control: not granted, not readable


@pytest.mark.parametrize("value", ["/", "/root", "relative/dir", "/ok:/home"])
def test_grants_that_would_expose_everything_are_refused(workspace: Workspace, value: str) -> None:
    with pytest.raises(PolicyError, match=READ_ONLY_PATHS_ENV):
        default_policy(_env(workspace, **{READ_ONLY_PATHS_ENV: value}))
