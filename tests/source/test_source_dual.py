"""Dual source: /job/ci (trusted, locked read-only and verified) beside /job/src (untrusted), one run."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from runnerlib.security.paths import PathPolicyError, ReadOnlyViolation, Workspace
from runnerlib.source import SourceSpec, prepare_source
from runnerlib.source.dual import prepare_job_sources
from runnerlib.testing import reachable_tempdir


@pytest.fixture
def ci_tree(tmp_path: Path) -> Path:
    ci = tmp_path / "ci-src"
    (ci / ".reactorcide" / "plugins").mkdir(parents=True)
    (ci / "run_tests.py").write_text("print('ci')\n")
    (ci / "open").mkdir()
    os.chmod(ci / "open", 0o777)  # a hostile or careless source: a world-writable directory
    (ci / "open" / "script.sh").write_text("#!/bin/sh\n")
    os.chmod(ci / "open" / "script.sh", 0o777)
    return ci


# The uid untrusted steps would use: any uid but ours (the suite also runs as 65534).
OTHER_UID = 65533 if os.geteuid() == 65534 else 65534

def test_both_sources_in_one_run_and_ci_locked(workspace, registry, origin, ci_tree) -> None:
    result = prepare_job_sources(
        workspace=workspace, registry=registry,
        ci_spec=SourceSpec(type="copy", url=str(ci_tree), field_prefix="ci_source"),
        src_spec=SourceSpec(type="git", url=origin["url"], ref="feature"),
        untrusted_uid=OTHER_UID, env={"PATH": os.environ["PATH"], "HOME": str(workspace.root)})
    root = Path(workspace.root)
    assert result.ci_verified and result.ci_locked_entries >= 5
    assert (root / "ci" / "run_tests.py").exists()
    assert (root / "src" / "feature.txt").exists()
    for dirpath, dirs, files in os.walk(root / "ci"):
        for name in [*dirs, *files]:
            mode = os.lstat(os.path.join(dirpath, name)).st_mode
            assert not mode & 0o222, f"{name} still writable"
    assert not stat.S_IMODE(os.stat(root / "ci").st_mode) & 0o222
    assert result.src is not None and result.src.revision == origin["c4"]


def test_from_job_config_like_object(workspace, registry, ci_tree, origin) -> None:
    class Config:
        workspace_root = str(workspace.root)
        ci_dir = f"{workspace.root}/ci"
        code_dir = f"{workspace.root}/src"
        ci_source_type, ci_source_url, ci_source_ref = "copy", str(ci_tree), None
        source_type, source_url, source_ref = "git", origin["url"], "main"
        allow_insecure_transport = False

    result = prepare_job_sources(config=Config(), registry=registry, log=lambda line: None, untrusted_uid=OTHER_UID)
    assert result.ci is not None and result.src is not None and result.ci_verified


def test_ci_nested_in_src_refused(workspace, registry, ci_tree) -> None:
    with pytest.raises(PathPolicyError, match="nested"):
        prepare_job_sources(workspace=workspace, registry=registry,
                            ci_spec=SourceSpec(type="copy", url=str(ci_tree)), src_spec=None,
                            ci_dir="src/ci", src_dir="src", untrusted_uid=OTHER_UID)


def test_verification_fails_when_the_workspace_lets_ci_be_swapped(workspace, registry, ci_tree) -> None:
    os.chmod(workspace.root, 0o777)
    try:
        with pytest.raises(ReadOnlyViolation, match="could swap the tree"):
            prepare_job_sources(workspace=workspace, registry=registry,
                                ci_spec=SourceSpec(type="copy", url=str(ci_tree)), src_spec=None,
                                untrusted_uid=OTHER_UID)
    finally:
        os.chmod(workspace.root, 0o755)


def test_vcs_auth_dir_removed_after_preparation(workspace, registry, ci_tree) -> None:
    auth = Path(workspace.root) / ".reactorcide" / "vcs-auth"
    auth.mkdir(parents=True)
    (auth / "credentials").write_text("https://bot:VcsT0ken-abcdef123@git.example.com/o/r.git\n")
    env = {"PATH": os.environ["PATH"], "REACTORCIDE_VCS_AUTH_DIR": str(auth), "REACTORCIDE_VCS_AUTH_CLEANUP": "true"}
    prepare_job_sources(workspace=workspace, registry=registry, ci_spec=SourceSpec(type="copy", url=str(ci_tree)),
                        src_spec=None, untrusted_uid=OTHER_UID, env=env)
    assert not auth.exists()
    assert registry.mask_text("VcsT0ken-abcdef123") == "***"


def test_none_types_prepare_nothing(workspace, registry) -> None:
    result = prepare_job_sources(workspace=workspace, registry=registry, ci_spec=SourceSpec(type="none"),
                                 src_spec=SourceSpec(type="none"), untrusted_uid=OTHER_UID)
    assert result.ci is None and result.src is None and not result.ci_verified


def _as_nobody(command: str) -> int:
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", command],
                          capture_output=True).returncode


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_untrusted_uid_cannot_write_ci_after_lock(registry, ci_tree) -> None:
    with reachable_tempdir("runnerlib-dual-") as base:
        shutil.copytree(ci_tree, Path(base) / "ci-src", symlinks=True)
        os.chmod(Path(base) / "ci-src", 0o755)
        root = Path(base) / "job"
        root.mkdir()
        ws = Workspace(root)
        # Without the lock: the world-writable directory from the source lets nobody plant a file in ci.
        prepare_source(SourceSpec(type="copy", url=str(Path(base) / "ci-src")), "ci", workspace=ws, registry=registry)
        assert _as_nobody(f"echo pwned > {root}/ci/open/planted") == 0
        assert _as_nobody(f"echo pwned >> {root}/ci/open/script.sh") == 0
        ws.rmtree("ci")
        # With prepare_job_sources: locked and verified before any step could run.
        prepare_job_sources(workspace=ws, registry=registry,
                            ci_spec=SourceSpec(type="copy", url=str(Path(base) / "ci-src")), src_spec=None,
                            untrusted_uid=OTHER_UID)
        for attack in (f"echo pwned > {root}/ci/open/planted", f"echo pwned >> {root}/ci/open/script.sh",
                       f"chmod 777 {root}/ci/run_tests.py", f"mv {root}/ci {root}/ci-old",
                       f"rm -f {root}/ci/run_tests.py"):
            assert _as_nobody(attack) != 0, attack
        assert (root / "ci" / "open" / "script.sh").read_text() == "#!/bin/sh\n"
        ws.close()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_src_handed_to_the_untrusted_uid_ci_not(registry, ci_tree, origin) -> None:
    with reachable_tempdir("runnerlib-dual-") as base:
        shutil.copytree(ci_tree, Path(base) / "ci-src", symlinks=True)
        root = Path(base) / "job"
        root.mkdir()
        ws = Workspace(root)
        prepare_job_sources(workspace=ws, registry=registry,
                            ci_spec=SourceSpec(type="copy", url=str(Path(base) / "ci-src")),
                            src_spec=SourceSpec(type="git", url=origin["url"], ref="main"),
                            untrusted_uid=65534, src_owner=(65534, 65534))
        assert _as_nobody(f"echo built > {root}/src/build.out && echo more >> {root}/src/README.md") == 0
        assert _as_nobody(f"echo pwned > {root}/ci/planted") != 0
        assert os.stat("/etc/hostname").st_uid == 0
        ws.close()


def test_vcs_auth_extra_header_registered(workspace, registry) -> None:
    from runnerlib.source.base import PrepareContext
    from runnerlib.source.git import register_vcs_auth

    auth = Path(workspace.root) / "vcs-auth"
    auth.mkdir()
    (auth / "gitconfig").write_text('[http "https://git.example.com/"]\n\textraHeader = Authorization: Bearer '
                                    "hdrTok-1234567890abcdef\n")
    ctx = PrepareContext(workspace=workspace, registry=registry, env={"REACTORCIDE_VCS_AUTH_DIR": str(auth)})
    assert register_vcs_auth(ctx) >= 1
    assert registry.mask_text("token hdrTok-1234567890abcdef end") == "token *** end"
