"""REACTORCIDE_SANDBOX_READ_ONLY_PATHS refuses the root in every spelling (`//`, `/./`, `/usr/..`, a symlink
to `/`, trailing slashes) and any directory holding the workspace. The attack: a grant of `//` (which the
previous check, comparing `os.path.normpath(item)` with "/", let through) lets a sandboxed step read a file
nobody granted; the same step without that grant cannot."""

from __future__ import annotations

import os

import pytest
from sandbox_testlib import Workspace

from runnerlib.execution.process import (
    READ_ONLY_PATHS_ENV,
    default_policy,
    extra_read_only_paths,
    run_process,
)
from runnerlib.security.policy import DEFAULT_READ_ONLY, PolicyError
from runnerlib.security.probe import probe
from runnerlib.testing import reachable_tempdir


def _env(ws: Workspace, **extra: str) -> dict[str, str]:
    return {"REACTORCIDE_SOURCE_DIR": str(ws.src), "REACTORCIDE_CI_SOURCE_DIR": str(ws.ci), **extra}


@pytest.mark.parametrize("value", ["/", "//", "///", "/./", "/../", "/usr/..", "//usr/../", "/usr/./../.",
                                   "/proc/self", "/root/", "/home//"])
def test_every_spelling_of_the_root_is_refused(workspace: Workspace, value: str) -> None:
    assert os.path.normpath(value) in ("/", "//", "/proc/self", "/root", "/home")
    with pytest.raises(PolicyError, match=READ_ONLY_PATHS_ENV):
        extra_read_only_paths(_env(workspace, **{READ_ONLY_PATHS_ENV: f"/srv/ok:{value}"}))


def test_a_symlink_to_the_root_is_refused(workspace: Workspace) -> None:
    with reachable_tempdir("rl-rootlink-") as base:
        os.symlink("/", base / "everything")
        with pytest.raises(PolicyError, match="is '/'"):
            extra_read_only_paths(_env(workspace, **{READ_ONLY_PATHS_ENV: str(base / "everything")}))


def test_directories_holding_the_workspace_are_refused(workspace: Workspace) -> None:
    for holder in (workspace.src.parent, workspace.src.parent.parent, str(workspace.ci) + "/", str(workspace.src)):
        with pytest.raises(PolicyError, match="holds the workspace"):
            extra_read_only_paths(_env(workspace, **{READ_ONLY_PATHS_ENV: str(holder)}))
    # A directory beside the workspace, and one inside the source tree, are fine.
    beside = str(workspace.src.parent.parent / "tools")
    assert extra_read_only_paths(_env(workspace, **{READ_ONLY_PATHS_ENV: beside + "/"}))[-1] == beside


@pytest.mark.skipif(probe().landlock_abi < 1, reason="needs Landlock (read grants are Landlock rules)")
def test_a_double_slash_grant_would_expose_every_file(workspace: Workspace, registry) -> None:  # type: ignore[no-untyped-def]
    # Outside /tmp: untrusted steps have a private /tmp, which would hide the file with or without the grant.
    with reachable_tempdir("rl-private-", dir="/var/tmp") as base:
        (base / "f.txt").write_text("private-content")
        os.chmod(base / "f.txt", 0o644)
        argv = ["/bin/sh", "-c", f"cat {base}/f.txt"]

        def run(policy) -> str:  # type: ignore[no-untyped-def]
            r = run_process(argv, registry=registry, trusted=False, policy=policy, env={"PATH": "/usr/bin:/bin"},
                            cwd=str(workspace.src), timeout=60, grace=1)
            return r.stdout + r.stderr

        # Protection off: the grant the old check let through.
        leaky = default_policy(_env(workspace), read_only_paths=DEFAULT_READ_ONLY + (str(workspace.ci), "//"))
        assert "private-content" in run(leaky)
        # Protection on: refused before anything runs; without it, the file stays unreadable.
        with pytest.raises(PolicyError, match=READ_ONLY_PATHS_ENV):
            default_policy(_env(workspace, **{READ_ONLY_PATHS_ENV: "//"}))
        assert "private-content" not in run(default_policy(_env(workspace)))
