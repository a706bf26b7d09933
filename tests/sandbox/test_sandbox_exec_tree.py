"""`SandboxPolicy.for_workspace` and `runnerlib sandbox exec` give an untrusted step the untrusted copy of the
source tree (<root>/.untrusted/src), never the pristine tree trusted steps work on (issue 11, the trust
boundary); and `sandbox exec`'s command line (issue 13): unknown options refused, --workspace-root (and its
old name --workspace) accepted.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sandbox_testlib import CHECKOUT, IS_ROOT, STEP_PYTHON, STEP_UID, needs_landlock

from runnerlib.execution.process import run_process
from runnerlib.security import cgroups
from runnerlib.security.policy import UNTRUSTED_SRC, SandboxPolicy
from runnerlib.source import pristine

RUNNERLIB = [sys.executable, "-m", "runnerlib.cli"]


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUNNERLIB, *args], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": CHECKOUT, **env})


def test_for_workspace_grants_the_untrusted_copy_not_the_pristine_tree(tmp_path):
    assert UNTRUSTED_SRC == pristine.UNTRUSTED_SRC  # one layout, whichever layer names it
    policy = SandboxPolicy.for_workspace(str(tmp_path))
    assert policy.read_write_paths == (f"{tmp_path}/{UNTRUSTED_SRC}", f"{tmp_path}/artifacts")
    granted = policy.read_write_paths + policy.read_only_paths + policy.writable_files
    assert not any(p == f"{tmp_path}/src" or p.startswith(f"{tmp_path}/src/") for p in granted)
    assert SandboxPolicy().read_write_paths == (f"/job/{UNTRUSTED_SRC}", "/job/artifacts")


def _pristine_open_to_all(workspace) -> None:
    """Make the pristine tree writable by anyone: only the sandbox's grants stand between the step and it."""
    for p in [workspace.src, *workspace.src.rglob("*")]:
        p.chmod(0o777 if p.is_dir() else 0o666)


ATTACK = ("echo planted > {src}/planted; echo changed >> {src}/own.txt; echo copy > written-in-copy; "
          "cat own.txt; echo; pwd")


@needs_landlock
def test_untrusted_exec_cannot_write_the_pristine_tree(workspace):
    """Attack: an untrusted `sandbox exec` writes into the pristine tree (a file of its own, and a change to a
    file trusted steps will read). Refused; the copy it works in (its working directory) is writable."""
    _pristine_open_to_all(workspace)
    done = _cli("sandbox", "exec", "--workspace-root", str(workspace.root), "--", "sh", "-c",
                ATTACK.format(src=workspace.src))
    assert not (workspace.src / "planted").exists(), done
    assert (workspace.src / "own.txt").read_text() == "mine", done
    copy = workspace.root / UNTRUSTED_SRC
    assert done.stdout.splitlines() == ["mine", str(copy)], done  # the copy holds the tree, and is its cwd
    assert (copy / "written-in-copy").read_text() == "copy\n"
    if IS_ROOT:
        assert os.stat(copy).st_uid == STEP_UID


@needs_landlock
def test_control_the_old_grant_let_the_attack_through(workspace, registry):
    """Control: the same step with the pristine tree granted, as for_workspace used to: the attack succeeds."""
    _pristine_open_to_all(workspace)
    old = SandboxPolicy.for_workspace(str(workspace.root),
                                      read_write_paths=(str(workspace.src), str(workspace.artifacts)))
    result = run_process(["sh", "-c", ATTACK.format(src=workspace.src)], registry=registry, trusted=False,
                         policy=old, env={"PATH": "/usr/bin:/bin"}, cwd=str(workspace.src), timeout=60)
    assert result.exit_code == 0, result
    assert (workspace.src / "planted").exists() and "changed" in (workspace.src / "own.txt").read_text()


@needs_landlock
def test_each_exec_outside_a_job_gets_a_fresh_copy_and_a_job_shares_its_own(workspace):
    first = _cli("sandbox", "exec", "--workspace-root", str(workspace.root), "--", "sh", "-c",
                 "echo built > build.out")
    assert first.returncode == 0, first
    (workspace.src / "own.txt").write_text("edited\n")
    second = _cli("sandbox", "exec", "--workspace", str(workspace.root), "--", "sh", "-c",
                  "cat own.txt; ls build.out 2>/dev/null || echo no-build")
    assert second.stdout.splitlines() == ["edited", "no-build"], second  # as a job of its own: fresh
    copy = str(workspace.root / UNTRUSTED_SRC)
    in_job = {"REACTORCIDE_WORKSPACE": str(workspace.root), "REACTORCIDE_SOURCE_DIR": str(workspace.src),
              pristine.UNTRUSTED_SOURCE_ENV: copy}
    build = _cli("sandbox", "exec", "--workspace-root", str(workspace.root), "--", "sh", "-c",
                 "echo built > build.out", **in_job)
    assert build.returncode == 0, build
    test = _cli("sandbox", "exec", "--workspace-root", str(workspace.root), "--", "cat", "build.out", **in_job)
    assert test.stdout == "built\n", test  # in a runner job: the job's copy, shared by its untrusted steps


@needs_landlock
def test_cwd_in_the_pristine_tree_moves_into_the_copy(workspace):
    (workspace.src / "sub").mkdir()
    if IS_ROOT:
        os.chown(workspace.src / "sub", STEP_UID, STEP_UID)
    done = _cli("sandbox", "exec", "--workspace-root", str(workspace.root), "--cwd", str(workspace.src / "sub"),
                "--", "pwd")
    assert done.stdout.strip() == str(workspace.root / UNTRUSTED_SRC / "sub"), done


def test_missing_workspace_root_is_one_clear_error(tmp_path):
    done = _cli("sandbox", "exec", "--workspace-root", str(tmp_path / "nowhere"), "--", "true")
    assert done.returncode == 78 and "--workspace-root" in done.stderr and "nowhere" in done.stderr, done
    assert len([line for line in done.stderr.splitlines() if "nowhere" in line]) == 1, done


# --- issue 13: the command line of `sandbox exec` ---------------------------------------------------------------


@pytest.mark.parametrize("args", [["--bogus", "--"], ["--bogus"], ["-x"]], ids=["before --", "no --", "short"])
def test_unknown_option_is_refused_not_run(workspace, args):
    marker = workspace.artifacts / "ran"
    done = _cli("sandbox", "exec", "--workspace-root", str(workspace.root), *args, "touch", str(marker))
    assert done.returncode == 78 and f"No such option '{args[0]}'" in done.stderr, done
    assert not marker.exists()


@needs_landlock
def test_options_after_the_command_are_the_commands(workspace):
    done = _cli("sandbox", "exec", "--workspace-root", str(workspace.root), "echo", "--bogus", "-x")
    assert done.returncode == 0 and done.stdout == "--bogus -x\n", done


def test_a_misspelt_workspace_root_gets_a_suggestion(workspace):
    done = _cli("sandbox", "exec", "--workspace-rot", str(workspace.root), "--", "true")
    assert done.returncode == 78 and "--workspace-root" in done.stderr, done


@needs_landlock
def test_exec_reports_a_memory_limit_by_name(workspace):
    hog = "x = []\nfor _ in range(200):\n    x.append(bytearray(1 << 20))"
    done = _cli("sandbox", "exec", "--workspace-root", str(workspace.root), "--limit", "memory=64M", "--",
                STEP_PYTHON, "-I", "-c", hog)
    assert done.returncode != 0, done
    if IS_ROOT and "memory" in cgroups.available():
        assert "runnerlib: killed: memory limit 64 MiB" in done.stderr, done
    else:
        assert "runnerlib: memory limit 64 MiB (an address-space limit) may have been reached" in done.stderr, done


@needs_landlock
def test_the_hand_over_area_is_cleaned_after_an_exec(workspace, registry):
    """Attack: an untrusted exec links an artifact to the CI tree, for a trusted step's `> artifact` to follow.
    Removed after the exec; control: the same step through run_process alone (no clean-up) leaves the link."""
    link = f"ln -s {workspace.ci}/x {workspace.artifacts}/coverage.txt"
    control = run_process(["sh", "-c", link], registry=registry, trusted=False, policy=workspace.policy(),
                          env={"PATH": "/usr/bin:/bin"}, cwd=str(workspace.src), timeout=60)
    assert control.exit_code == 0 and (workspace.artifacts / "coverage.txt").is_symlink(), control
    (workspace.artifacts / "coverage.txt").unlink()
    done = _cli("sandbox", "exec", "--workspace-root", str(workspace.root), "--", "sh", "-c", link)
    assert done.returncode == 0, done
    assert not os.path.lexists(workspace.artifacts / "coverage.txt"), done


RUN_UNTRUSTED_OUTSIDE_A_JOB = """
import os, sys, runnerlib
from runnerlib.security.policy import SandboxPolicy
src = os.environ["REACTORCIDE_SOURCE_DIR"]
root = os.path.dirname(src)
policy = None
if sys.argv[1] == "old-grant":  # the control: the pristine tree granted, as run_untrusted's default used to
    policy = SandboxPolicy.for_workspace(root, read_write_paths=(src, os.path.join(root, "artifacts")))
r = runnerlib.run_untrusted(["sh", "-c", sys.argv[2]], cwd=src, timeout=60, env={"PATH": "/usr/bin:/bin"},
                            policy=policy)
print(r.stdout.strip())  # not .output: stderr lines may come between
"""


@needs_landlock
@pytest.mark.parametrize("grant", ["default", "old-grant"])
def test_run_untrusted_outside_a_job_works_on_a_copy(workspace, grant):
    """Attack: a trusted script outside any runner job (no REACTORCIDE_WORKSPACE) sandboxes PR code with
    run_untrusted(cwd=<root>/src); the code writes into the pristine tree. By default it gets a fresh copy, as
    `sandbox exec` does, and the pristine tree stays; the control grants the pristine tree and the attack lands."""
    _pristine_open_to_all(workspace)
    done = subprocess.run([sys.executable, "-c", RUN_UNTRUSTED_OUTSIDE_A_JOB, grant, ATTACK.format(src=workspace.src)],
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": CHECKOUT, "REACTORCIDE_SOURCE_DIR":
                               str(workspace.src), "REACTORCIDE_CI_SOURCE_DIR": str(workspace.ci)})
    assert done.returncode == 0, done
    planted = (workspace.src / "planted").exists()
    if grant == "old-grant":
        assert planted and "changed" in (workspace.src / "own.txt").read_text(), done
        return
    assert not planted and (workspace.src / "own.txt").read_text() == "mine", done
    copy = workspace.root / UNTRUSTED_SRC
    assert done.stdout.splitlines() == ["mine", str(copy)], done
    assert (copy / "written-in-copy").read_text() == "copy\n"
