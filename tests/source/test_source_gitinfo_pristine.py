"""runnerlib's own git calls on a repository an untrusted step has been at (issue 11, cases 1 and 7).

Each attack is shown to work against plain git (the control) and to fail through runnerlib.source.gitinfo.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from srchelpers import fragments

from runnerlib.cli import main
from runnerlib.source import SourceSpec, prepare_source
from runnerlib.source.base import SourceError
from runnerlib.source.gitinfo import files_changed, repo_info

LINE = "TOPSECRET-line-Zq81xWv"


@pytest.fixture
def checked_out(workspace, registry, origin, env) -> Path:
    result = prepare_source(SourceSpec(type="git", url=origin["url"], ref="main", full_history=True), "src",
                            workspace=workspace, registry=registry, env=env)
    return result.path


def _plain_git(repo: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env)


def test_symlinked_packed_refs_is_refused_and_prints_nothing(tmp_path, checked_out) -> None:
    """Case 7: .git/packed-refs -> a private file; git's parse error quotes its first line."""
    private = tmp_path / "private"
    private.write_text(LINE + "\n")
    private.chmod(0o600)
    (checked_out / ".git" / "packed-refs").unlink(missing_ok=True)
    os.symlink(private, checked_out / ".git" / "packed-refs")
    # Control: plain git follows the link and prints the line.
    assert LINE in _plain_git(checked_out, "log", "-1", "--format=%s", home=tmp_path).stderr
    with pytest.raises(SourceError, match="symlinks leading out of the repository") as caught:
        repo_info(checked_out)
    assert not any(piece in str(caught.value) for piece in fragments(LINE))
    r = CliRunner().invoke(main, ["git", "info", "--workspace-root", str(checked_out.parent),
                                  "--code-dir", str(checked_out)])
    assert r.exit_code != 0 and not any(piece in r.output for piece in fragments(LINE)), r.output


@pytest.mark.parametrize("name", ["HEAD", "refs/heads/main", "config"])
def test_other_symlinked_git_files_are_refused(tmp_path, checked_out, name) -> None:
    private = tmp_path / "private"
    private.write_text(LINE + "\n")
    target = checked_out / ".git" / name
    target.unlink()
    os.symlink(private, target)
    with pytest.raises(SourceError, match="symlinks leading out"):
        files_changed(checked_out, "HEAD~1")


def test_alternates_pointing_elsewhere_are_refused(tmp_path, checked_out) -> None:
    (checked_out / ".git" / "objects" / "info").mkdir(parents=True, exist_ok=True)
    (checked_out / ".git" / "objects" / "info" / "alternates").write_text(str(tmp_path) + "\n")
    with pytest.raises(SourceError, match="alternates points git at another directory"):
        repo_info(checked_out)


def test_planted_filters_credential_helpers_and_ssh_commands_run_nothing(tmp_path, checked_out, origin) -> None:
    """Case 1, runnerlib's side: every program-running setting an untrusted step could write."""
    marker = tmp_path / "PWNED"
    prog = tmp_path / "evil.sh"
    prog.write_text(f"#!/bin/sh\necho \"$0 $*\" >> {marker}\ncat\n")
    prog.chmod(0o755)
    (checked_out / ".gitattributes").write_text("* filter=evil diff=evil\n")
    (checked_out / "src" / "app.py").write_text("changed\n")  # makes `git status` / `git diff` run the filter
    with open(checked_out / ".git" / "config", "a") as fh:
        fh.write(f"[filter \"evil\"]\n\tclean = {prog}\n\tsmudge = {prog}\n"
                 f"[diff \"evil\"]\n\ttextconv = {prog}\n\tcommand = {prog}\n"
                 f"[core]\n\tfsmonitor = {prog}\n\tsshCommand = {prog}\n\tpager = {prog}\n"
                 f"[credential]\n\thelper = !{prog}\n[gpg]\n\tprogram = {prog}\n[log]\n\tshowSignature = true\n")
    # Control: plain git in that repository runs them.
    _plain_git(checked_out, "status", home=tmp_path)
    _plain_git(checked_out, "diff", home=tmp_path)
    assert marker.exists()
    marker.unlink()
    assert files_changed(checked_out, origin["c1"]) == ["src/app.py"]
    assert files_changed(checked_out, origin["c1"], merge_base=True) == ["src/app.py"]
    repo_info(checked_out)
    assert not marker.exists()


def test_the_untrusted_copy_is_refused_with_the_reason(tmp_path, checked_out) -> None:
    root = checked_out.parent
    copy = root / ".untrusted" / "src"
    copy.mkdir(parents=True)
    r = CliRunner().invoke(main, ["git", "info", "--workspace-root", str(root), "--code-dir", str(copy)])
    assert r.exit_code != 0 and "untrusted steps' copy" in r.output, r.output
    ok = CliRunner().invoke(main, ["git", "info", "--workspace-root", str(root), "--code-dir", str(checked_out)])
    assert ok.exit_code == 0, ok.output
