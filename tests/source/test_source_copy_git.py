"""A `copy` source of a git work tree copies what git would (tracked, and untracked not ignored; no .venv, no
.git), anything else whole; git runs with its program-running settings pinned off (an ATTACK test with its
control); the first lines of a `runnerlib run --source-type copy --source-url .` say which."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_testlib import rl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runnerlib.security.paths import Workspace
from runnerlib.source import SourceError, SourceSpec, prepare_source
from runnerlib.source.git_files import GitFiles, git_files, work_tree_of

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@e"]


def prep(workspace: Workspace, registry: object, url: str, env: dict[str, str] | None = None):  # noqa: ANN201
    return prepare_source(SourceSpec(type="copy", url=url), "src", workspace=workspace, registry=registry, env=env)


def project(tmp: Path) -> Path:
    """A checkout as a laptop has it: committed files, an untracked one, an ignored .venv whose absolute link a
    whole copy refuses, a build/ directory ignored, and an untracked nested repository."""
    proj = tmp / "myproject"
    (proj / ".venv" / "bin").mkdir(parents=True)
    os.symlink(sys.executable, proj / ".venv" / "bin" / "python")
    (proj / "build").mkdir()
    (proj / "build" / "out.o").write_text("o")
    (proj / ".gitignore").write_text(".venv/\nbuild/\n*.log\n")
    (proj / "src").mkdir()
    (proj / "src" / "app.py").write_text("print(1)\n")
    (proj / "src" / "debug.log").write_text("ignored\n")
    subprocess.run(["git", "init", "-q", str(proj)], check=True)
    subprocess.run([*GIT, "-C", str(proj), "add", "."], check=True)
    subprocess.run([*GIT, "-C", str(proj), "commit", "-qm", "init"], check=True)
    (proj / "new_test.py").write_text("n\n")  # untracked, not ignored: what the user is testing
    nested = proj / "vendor" / "lib"
    nested.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(nested)], check=True)
    (nested / "lib.py").write_text("l\n")
    return proj


def copied(workspace: Workspace) -> set[str]:
    root = Path(workspace.path("src"))
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}


def test_a_work_tree_copies_what_git_would(tmp_path: Path, workspace: Workspace, registry: object) -> None:
    proj = project(tmp_path)
    result = prep(workspace, registry, str(proj))
    assert copied(workspace) == {".gitignore", "src/app.py", "new_test.py", "vendor/lib/lib.py"}
    assert result.details["git_work_tree"] == str(proj) and result.details["left_out"] >= 3


def test_a_subdirectory_of_a_work_tree(tmp_path: Path, workspace: Workspace, registry: object) -> None:
    proj = project(tmp_path)
    prep(workspace, registry, f"file://{proj / 'src'}")
    assert copied(workspace) == {"app.py"}


def test_control_a_directory_outside_git_is_copied_whole(tmp_path: Path, workspace: Workspace,
                                                          registry: object) -> None:
    plain = tmp_path / "plain"
    (plain / "build").mkdir(parents=True)
    (plain / "build" / "out.o").write_text("o")
    (plain / ".gitignore").write_text("build/\n")  # no work tree: no rule applies
    result = prep(workspace, registry, str(plain))
    assert copied(workspace) == {".gitignore", "build/out.o"}
    assert result.details["git_work_tree"] is None
    # and the laptop checkout copied whole is what failed before: its .venv link leads out of the tree
    proj = project(tmp_path / "p")
    shutil.rmtree(proj / ".git")
    with pytest.raises(SourceError, match="symlink"):
        prep(workspace, registry, str(proj))


def test_a_work_tree_without_git_installed_is_refused(tmp_path: Path, workspace: Workspace, registry: object) -> None:
    proj = project(tmp_path)
    with pytest.raises(SourceError, match="git, which is not installed"):
        prep(workspace, registry, str(proj), env={"PATH": str(tmp_path / "empty-bin")})
    assert not os.path.exists(workspace.path("src")) or not os.listdir(workspace.path("src"))


def test_work_tree_discovery(tmp_path: Path) -> None:
    proj = project(tmp_path)
    assert work_tree_of(str(proj / "src")) == str(proj)
    assert work_tree_of(str(proj / ".git")) is None and work_tree_of(str(proj / ".git" / "refs")) is None
    assert work_tree_of(str(tmp_path)) is None


def test_attack_fsmonitor_in_the_copied_repository_does_not_run(tmp_path: Path) -> None:
    """A repository's own config names a program git runs while listing files (core.fsmonitor). runnerlib's
    listing pins it off; the control runs plain `git ls-files` on the same repository and the program runs."""
    proj = project(tmp_path)
    marker = tmp_path / "fsmonitor-ran"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    hook.chmod(0o755)
    subprocess.run(["git", "-C", str(proj), "config", "core.fsmonitor", str(hook)], check=True)
    listing = git_files(str(proj), str(proj))
    assert "src/app.py" in listing.files and not marker.exists()
    subprocess.run(["git", "-C", str(proj), "ls-files", "-z", "-co", "--exclude-standard"], capture_output=True,
                   check=False)
    assert marker.exists(), "control: without the pins git runs the repository's program"


def test_cli_first_lines_say_what_is_copied(tmp_path: Path) -> None:
    proj = project(tmp_path)
    root = tmp_path / "private"
    root.mkdir(mode=0o700)
    r = rl("run", "--workspace-root", str(root / "ws"), "--source-type", "copy", "--source-url", ".", "--",
           "ls", "-A", cwd=proj)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.splitlines()[0] == (f"runnerlib: source: {proj}, copied into {root / 'ws' / 'src'}: the files "
                                        f"git knows of (in the git work tree {proj}: tracked, and untracked ones not "
                                        "ignored; no .git)")
    listed = {line.split("] ", 1)[1] for line in r.stdout.splitlines() if line.startswith("[job] ")}
    assert listed == {".gitignore", "src", "new_test.py", "vendor"}  # no .venv, no build, no .git
    plain = tmp_path / "plain"
    plain.mkdir()
    r = rl("run", "--workspace-root", str(root / "ws2"), "--source-type", "copy", "--source-url", ".", "--",
           "true", cwd=plain)
    assert r.returncode == 0 and "copied into" in r.stderr and "everything (not in a git work tree)" in r.stderr


_names = st.sampled_from(["a", "b", "c", ".git", "d.txt"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sets(st.lists(_names, min_size=1, max_size=3).map(tuple), min_size=1, max_size=8), st.data())
def test_the_copy_holds_exactly_the_listed_files(tmp_path: Path, paths: set[tuple[str, ...]],
                                                 data: st.DataObject) -> None:
    """Property: with any tree and any listed subset, the copy holds the listed files and nothing else."""
    files = {p for p in paths if not any(q != p and q[:len(p)] == p for q in paths)}  # leaves only
    files = {p for p in files if not any(p[:i] in files for i in range(1, len(p)))}
    case = tmp_path / f"case{len(list(tmp_path.iterdir()))}"  # one directory per example
    src = case / "src"
    for p in files:
        (src.joinpath(*p[:-1])).mkdir(parents=True, exist_ok=True)
        src.joinpath(*p).write_text("x")
    src.mkdir(parents=True, exist_ok=True)
    listed = data.draw(st.sets(st.sampled_from(sorted(files))))
    listing = GitFiles(str(src))
    for p in listed:
        listing.files.add("/".join(p))
        listing.parents.update("/".join(p[:i]) for i in range(1, len(p)))
    (case / "ws").mkdir()
    with Workspace(case / "ws") as ws:
        ws.copy_in(src, "dst", include=listing.includes)
        got = {tuple(q.relative_to(case / "ws" / "dst").parts) for q in (case / "ws" / "dst").rglob("*")
               if q.is_file()}
    assert got == set(listed)
