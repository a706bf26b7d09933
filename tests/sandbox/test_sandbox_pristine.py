"""Trusted steps never work on a tree an untrusted step could change (issue 11, cases 1 and 3).

Untrusted steps get their own copy of /job/src (runnerlib.source.pristine); trusted steps keep /job/src as it was
prepared, and their default working directory is the CI tree when there is one. Each attack is run against the
protected runner and, as its control, in a way that shows it works when nothing stops it.
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_testlib import IS_ROOT, SECRET, STEP_PYTHON, needs_landlock

from runnerlib import Job, get_config
from runnerlib.runner import JobRunner
from runnerlib.testing import reachable_tempdir

ENV = {"PATH": "/usr/bin:/bin", "DEPLOY_TOKEN": SECRET, "LC_ALL": "C"}


@pytest.fixture
def root() -> Iterator[Path]:
    with reachable_tempdir("rl-pristine-") as path:
        (path / "src").mkdir()
        os.chmod(path / "src", 0o755)
        yield path


def run(root: Path, job: Job) -> tuple[int, str]:
    out = io.BytesIO()
    env = {**ENV, "HOME": str(root)}
    code = JobRunner(get_config(workspace_root=str(root)), job, out=out, handle_signals=False, environ=env).run()
    return code, out.getvalue().decode()


def _git_repo(path: Path) -> None:
    env = {**ENV, "HOME": str(path), "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@x", "GIT_COMMITTER_NAME": "a",
           "GIT_COMMITTER_EMAIL": "a@x"}
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "one"]):
        subprocess.run(["git", *args], cwd=path, env=env, check=True, capture_output=True)


PLANT = ("sh -c 'printf \"#!/bin/sh\\necho ran > {marker}\\n\" > {dir}/evil.sh; chmod 755 {dir}/evil.sh; "
         "git config -f {dir}/.git/config core.fsmonitor {dir}/evil.sh && echo planted in {dir}'")


@needs_landlock
def test_untrusted_fsmonitor_never_runs_in_a_trusted_git_status(root: Path) -> None:
    """Case 1: the untrusted step writes core.fsmonitor into .git/config (its own copy's, and tries /job/src's);
    the trusted `git status` that follows runs nothing: /job/src is pristine and no safe.directory is set."""
    _git_repo(root / "src")
    marker = root / "PWNED"
    job = Job("case1")
    job.add_step("plant", PLANT.format(marker=marker, dir="$PWD") + f"; {PLANT.format(marker=marker, dir=root / 'src')}"
                 "; true", trust="untrusted")
    job.add_step("status", "git status --short", depends_on=["plant"])
    job.add_step("copy", f"git -C {root}/.untrusted/src status --short; true", depends_on=["status"])
    code, out = run(root, job)
    assert code == 0, out
    assert f"[plant] planted in {root}/.untrusted/src\n" in out and f"[plant] planted in {root}/src\n" not in out, out
    assert "[status] finished (ok)" in out, out
    if IS_ROOT:
        # The copy belongs to the sandbox uid: git's own protection holds again for a trusted step going there.
        assert "dubious ownership" in out.split("[copy]", 1)[1], out
        assert not marker.exists(), out
    # Unprivileged, the copy shares the runner's uid: a trusted step that chooses to run git in the untrusted copy
    # trusts it (docs/sandbox.md); the `status` step, in /job/src as by default, ran nothing (checked here).
    assert "ran" not in out.split("[status]", 2)[2].split("[copy]", 1)[0], out
    assert "core.fsmonitor" not in (root / "src" / ".git" / "config").read_text()


def test_control_the_same_fsmonitor_runs_when_planted_in_the_trusted_tree(root: Path) -> None:
    """Control: planted where the trusted step works (as the old runner let untrusted steps do), it runs."""
    _git_repo(root / "src")
    marker = root / "PWNED"
    job = Job("control1")
    job.add_step("plant", PLANT.format(marker=marker, dir=root / "src"))
    job.add_step("status", "git status --short", depends_on=["plant"])
    code, out = run(root, job)
    assert code == 0 and marker.exists(), out


JSON_PY = "open({marker!r}, 'w').write('shadowed')\nfrom json import *\n"
IMPORT = f"{STEP_PYTHON} -c 'import json, os; print(\"cwd\", os.getcwd(), json.__name__)'"


def test_trusted_steps_default_to_the_ci_tree_so_a_shipped_json_py_is_not_imported(root: Path) -> None:
    """Case 3: the pull request ships src/json.py; the docs' `python3 -c 'import json ...'` runs in /job/ci."""
    (root / "ci").mkdir()
    os.chmod(root / "ci", 0o755)
    marker = root / "SHADOWED"
    (root / "src" / "json.py").write_text(JSON_PY.format(marker=str(marker)))
    job = Job("case3")
    job.add_step("secrets", IMPORT)
    code, out = run(root, job)
    assert code == 0 and f"cwd {root}/ci json" in out and not marker.exists(), out
    # Control: the same command in the source tree imports the shipped module.
    job = Job("control3")
    job.add_step("secrets", f"cd {root / 'src'} && {IMPORT}")  # working_dir must be relative: cd there
    code, out = run(root, job)
    assert code == 0 and marker.exists(), out


@needs_landlock
def test_a_json_py_planted_by_an_untrusted_step_stays_in_its_copy(root: Path) -> None:
    """Case 3 in a single-source job: trusted steps run in the pristine src, where the planted file is not."""
    marker = root / "SHADOWED"
    job = Job("plant3")
    job.add_step("plant", ["/bin/sh", "-c", f"printf '%s' \"$0\" > json.py; cp json.py {root}/src/json.py; true",
                           JSON_PY.format(marker=str(marker))], trust="untrusted")
    job.add_step("secrets", IMPORT, depends_on=["plant"])
    code, out = run(root, job)
    assert code == 0 and f"cwd {root}/src json" in out and not marker.exists(), out
    assert (root / ".untrusted" / "src" / "json.py").exists()
    # Control: a trusted step run where the planted file is (kept aside: the next job removes the old copy).
    (root / "plain").mkdir()
    os.rename(root / ".untrusted" / "src" / "json.py", root / "plain" / "json.py")
    job = Job("control")
    job.add_step("secrets", f"cd {root / 'plain'} && {IMPORT}")
    code, out = run(root, job)
    assert marker.exists(), out


@needs_landlock
def test_untrusted_steps_cannot_reach_the_pristine_tree(root: Path) -> None:
    (root / "src" / "app.py").write_text("original\n")
    job = Job("reach")
    job.add_step("vandal", f"sh -c 'echo changed > {root}/src/app.py; echo changed > app.py; "
                           "echo SRC=$REACTORCIDE_SOURCE_DIR'", trust="untrusted")
    code, out = run(root, job)
    assert (root / "src" / "app.py").read_text() == "original\n", out
    assert (root / ".untrusted" / "src" / "app.py").read_text() == "changed\n", out
    # Denied by Landlock, or not even there (a workspace under /tmp is outside the step's private /tmp).
    assert f"SRC={root}/.untrusted/src" in out and ("denied" in out or "nonexistent" in out) and code == 0, out


RUN_UNTRUSTED = """
import os, sys, runnerlib
src = os.environ["REACTORCIDE_SOURCE_DIR"]
art = os.environ["REACTORCIDE_ARTIFACTS_DIR"]
r = runnerlib.run_untrusted(f"touch built.o; echo x > app.py; ln -s /etc/passwd {art}/l; pwd",
                            cwd=src, timeout=60, env={"PATH": "/usr/bin:/bin"})
print("EXIT", r.exit_code, r.output.strip())
"""


@needs_landlock
def test_run_untrusted_from_a_ci_script_works_on_the_copy_too(root: Path) -> None:
    """Advanced mode: a trusted CI script sandboxes PR code with run_untrusted(cwd=/job/src); the PR code gets the
    untrusted copy (made on first use), the pristine tree stays, and the hand-over area is cleaned afterwards."""
    import sys

    (root / "src" / "app.py").write_text("original\n")
    (root / "artifacts").mkdir()
    os.chmod(root / "artifacts", 0o1777)
    job = Job("advanced")
    job.add_step("ci", [sys.executable, "-c", RUN_UNTRUSTED])
    code, out = run(root, job)
    assert code == 0 and f"EXIT 0 {root}/.untrusted/src" in out, out
    assert (root / "src" / "app.py").read_text() == "original\n" and not (root / "src" / "built.o").exists()
    assert (root / ".untrusted" / "src" / "built.o").exists() and not (root / "artifacts" / "l").is_symlink()


def test_the_docs_register_example_ignores_a_planted_json_py(tmp_path: Path) -> None:
    """Case 3, the documented example itself (docs/secrets.md): `python3 -I -c` in a directory holding a
    json.py. Control: the same example without -I imports it (with the secret on its stdin)."""
    import re

    from runnerlib.security.registry import SecretRegistry
    from runnerlib.security.secret_socket import SecretSocketServer

    doc = (Path(__file__).resolve().parents[2] / "docs" / "secrets.md").read_text()
    example = re.search(r"```sh\n# example: register-python3\n(.*?)```", doc, re.S).group(1)  # type: ignore[union-attr]
    assert "python3 -I -c" in example
    marker = tmp_path / "SHADOWED"
    (tmp_path / "json.py").write_text(JSON_PY.format(marker=str(marker)))
    for script, imported in ((example, False), (example.replace("python3 -I -c", "python3 -c"), True)):
        registry = SecretRegistry()
        with SecretSocketServer(registry) as server:
            env = {"PATH": "/usr/bin:/bin", "DEPLOY_TOKEN": SECRET, **server.env()}
            proc = subprocess.run(["sh", "-c", script], env=env, cwd=tmp_path, capture_output=True, timeout=60)
        assert marker.exists() is imported, proc
        if not imported:
            assert proc.returncode == 0 and SECRET.encode() in registry.secrets(), proc


def test_a_named_job_dir_is_kept_for_trusted_steps(root: Path) -> None:
    """A job dir below the source tree is kept; one naming the source tree itself (what the worker sets for every
    job) is the default spelled out, so trusted steps start in the CI tree (tests/sandbox/test_redteam_round3.py)."""
    (root / "ci").mkdir()
    (root / "src" / "app").mkdir()
    for job_dir, where in ((root / "src" / "app", root / "src" / "app"), (root / "src", root / "ci")):
        out = io.BytesIO()
        config = get_config(workspace_root=str(root), job_dir=str(job_dir), job_command="pwd")
        code = JobRunner(config, out=out, handle_signals=False, environ={**ENV, "HOME": str(root)}).run()
        assert code == 0 and f"[job] {where}\n" in out.getvalue().decode(), out.getvalue()


def test_the_copy_keeps_links_as_they_are_and_follows_none(root: Path) -> None:
    from runnerlib.security.paths import Workspace
    from runnerlib.source.pristine import untrusted_copy

    secret = root / "private"
    secret.write_text("PRIVATE")
    (root / "src" / "pkg").mkdir()
    (root / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    os.symlink("pkg/mod.py", root / "src" / "alias")
    os.symlink(secret, root / "src" / "outward")
    os.mkfifo(root / "src" / "pipe")
    with Workspace(root) as ws:
        copy = untrusted_copy(ws, str(root / "src"), owner=None)
        again = untrusted_copy(ws, str(root / "src"), owner=None)
    base = Path(copy.path)
    assert os.readlink(base / "alias") == "pkg/mod.py" and os.readlink(base / "outward") == str(secret)
    assert not (base / "pipe").exists() and (base / "pkg" / "mod.py").read_text() == "x = 1\n"
    assert copy.created and not again.created and secret.read_text() == "PRIVATE"


def test_a_job_file_in_the_untrusted_copy_cannot_declare_trusted_steps(root: Path) -> None:
    from runnerlib.config import load_job_file

    copy = root / ".untrusted" / "src"
    copy.mkdir(parents=True)
    (copy / "job.yaml").write_text(f"steps:\n  - name: steal\n    command: env > {root}/stolen.txt\n")
    _layer, job, _doc = load_job_file(copy / "job.yaml")
    code, out = run(root, job)
    assert code == 78 and "untrusted source tree" in out and not (root / "stolen.txt").exists(), out
