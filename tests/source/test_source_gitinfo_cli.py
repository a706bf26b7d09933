"""gitinfo on a hostile repository, and the CLI commands: checkout, copy, cleanup, git files-changed / info."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from srchelpers import fragments, git

from runnerlib.cli import main
from runnerlib.source import SourceSpec, prepare_source
from runnerlib.source.gitinfo import files_changed, repo_info


@pytest.fixture
def checked_out(workspace, registry, origin, env) -> Path:
    result = prepare_source(SourceSpec(type="git", url=origin["url"], ref="main", full_history=True), "src",
                            workspace=workspace, registry=registry, env=env)
    return result.path


def test_files_changed_and_info(checked_out, origin) -> None:
    assert files_changed(checked_out, origin["c1"]) == ["src/app.py"]
    assert files_changed(checked_out, origin["c3"]) == []
    assert files_changed(checked_out, "origin/feature", merge_base=True) == []
    assert files_changed(checked_out, "HEAD", "origin/feature") == ["feature.txt"]
    info = repo_info(checked_out)
    assert info["sha"] == origin["c3"] and info["branch"] == "main" and info["subject"] == "third"
    assert info["author"] == "Ada <ada@example.com>" and info["shallow"] is False
    assert info["remotes"] == {"origin": origin["url"]}


def test_hostile_repository_config_runs_nothing(tmp_path, checked_out, origin) -> None:
    """After untrusted steps, .git/config may name programs; reading the repository must not run them."""
    marker = tmp_path / "GITINFO-PWNED"
    prog = tmp_path / "evil.sh"
    prog.write_text(f"#!/bin/sh\necho ran >> {marker}\ncat >/dev/null\nexit 1\n")
    prog.chmod(0o755)
    with open(checked_out / ".git" / "config", "a") as fh:
        fh.write(f"[core]\n\tfsmonitor = {prog}\n\tpager = {prog}\n[log]\n\tshowSignature = true\n"
                 f"[gpg]\n\tprogram = {prog}\n[diff]\n\texternal = {prog}\n")
    # Without protection: plain `git status` / `git diff` in that repository run the configured programs.
    plain_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "-C", str(checked_out), "status"], capture_output=True, env=plain_env)
    subprocess.run(["git", "-C", str(checked_out), "diff", origin["c1"]], capture_output=True, env=plain_env)
    assert marker.exists()
    marker.unlink()
    files_changed(checked_out, origin["c1"])
    repo_info(checked_out)
    assert not marker.exists()


def test_refs_starting_with_dash_refused(checked_out) -> None:
    with pytest.raises(Exception, match="not starting with '-'"):
        files_changed(checked_out, "--output=/tmp/x")


# -- CLI ------------------------------------------------------------------------------------------

def run_cli(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_cli_checkout_info_files_changed_cleanup(tmp_path, origin) -> None:
    root = tmp_path / "job"
    r = run_cli("checkout", origin["url"], "--ref", "main", "--full-history", "--workspace-root", str(root))
    assert r.exit_code == 0, r.output
    assert origin["c3"] in r.output
    r = run_cli("git", "info", "--workspace-root", str(root), "--json")
    assert r.exit_code == 0 and json.loads(r.output)["sha"] == origin["c3"]
    r = run_cli("git", "info", "--workspace-root", str(root))
    assert "Branch: main" in r.output
    r = run_cli("git", "files-changed", origin["c1"], "--workspace-root", str(root))
    assert r.output.split() == ["src/app.py"]
    r = run_cli("cleanup", "-v", "--workspace-root", str(root))
    assert r.exit_code == 0 and os.listdir(root) == []


def test_cli_copy_and_code_dir(tmp_path) -> None:
    src = tmp_path / "tree"
    src.mkdir()
    (src / "f").write_text("x")
    root = tmp_path / "job"
    r = run_cli("copy", str(src), "--workspace-root", str(root), "--code-dir", str(root / "code"))
    assert r.exit_code == 0, r.output
    assert (root / "code" / "f").read_text() == "x"


@pytest.mark.parametrize("code_dir", ["/job/../tmp/x", "/jobX", "~/x"])
def test_cli_refuses_bad_code_dir_with_one_line(tmp_path, origin, code_dir) -> None:
    r = CliRunner().invoke(main, ["checkout", origin["url"], "--workspace-root", "/job", "--code-dir", code_dir])
    assert r.exit_code == 78
    assert "code_dir:" in r.output
    assert len([line for line in r.output.splitlines() if line.startswith("runnerlib: error")]) == 1


def test_cli_error_with_credentials_is_masked(tmp_path, git_http) -> None:
    server, base = git_http
    url = f"http://{server.user}:{server.password}@{base.split('://')[1]}/origin.git"
    r = CliRunner().invoke(main, ["checkout", url, "--ref", "no-such-ref", "--workspace-root", str(tmp_path / "job"),
                                  "--allow-insecure-transport"], env={"GIT_CONFIG_GLOBAL": "/dev/null"})
    assert r.exit_code == 1  # a source failure, not a configuration error
    assert "no-such-ref" in r.output
    assert all(piece not in r.output for piece in fragments(server.password))


def test_cli_cleanup_refuses_slash(tmp_path) -> None:
    r = CliRunner().invoke(main, ["cleanup", "--workspace-root", "/"])
    assert r.exit_code == 78 and "workspace_root" in r.output


def test_cli_cleanup_never_follows_links(tmp_path) -> None:
    root = tmp_path / "job"
    root.mkdir()
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "important").write_text("x")
    os.symlink(keep, root / "link")
    assert run_cli("cleanup", "--workspace-root", str(root)).exit_code == 0
    assert (keep / "important").exists() and os.listdir(root) == []


def test_git_helper_is_sane(tmp_path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q")
    assert (repo / ".git").is_dir()


def test_planted_gitdir_file_or_symlink_is_refused(tmp_path, checked_out, origin) -> None:
    """A step replaces src/.git with a pointer to another repository on the runner's disk."""
    import shutil as _shutil

    private = tmp_path / "private"
    private.mkdir()
    git(private, "init", "-q", "-b", "main")
    (private / "x").write_text("x")
    git(private, "add", "x")
    git(private, "commit", "-q", "-m", "PRIVATE-SUBJECT")
    _shutil.rmtree(checked_out / ".git")
    (checked_out / ".git").write_text(f"gitdir: {private / '.git'}\n")
    with pytest.raises(Exception, match="must be a directory"):
        repo_info(checked_out)
    (checked_out / ".git").unlink()
    os.symlink(private / ".git", checked_out / ".git")
    with pytest.raises(Exception, match="must be a directory"):
        repo_info(checked_out)


def test_cli_checkout_tarball_and_limits(tmp_path) -> None:
    import io
    import tarfile

    archive = tmp_path / "src.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for i in range(5):
            info = tarfile.TarInfo(f"f{i}")
            info.size = 1
            tf.addfile(info, io.BytesIO(b"x"))
    root = tmp_path / "job"
    ok = run_cli("checkout", str(archive), "--type", "tarball", "--workspace-root", str(root))
    assert ok.exit_code == 0 and sorted(os.listdir(root / "src")) == [f"f{i}" for i in range(5)]
    r = CliRunner().invoke(main, ["checkout", str(archive), "--type", "tarball", "--max-entries", "3",
                                  "--workspace-root", str(root)])
    assert r.exit_code == 1 and "more than 3 entries" in r.output
    assert sorted(os.listdir(root / "src")) == [f"f{i}" for i in range(5)]  # the refused archive changed nothing
