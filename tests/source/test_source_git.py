"""git strategy against real repositories: file://, a git daemon and git http-backend on 127.0.0.1."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from srchelpers import all_text_under, clean_env, commit, fragments, git

from runnerlib.security.paths import Workspace
from runnerlib.security.registry import SecretRegistry
from runnerlib.source import SourceError, SourceSpec, prepare_source

pytestmark = pytest.mark.skipif(not __import__("shutil").which("git"), reason="git is not installed")


def checkout(workspace: Workspace, registry: SecretRegistry, env: dict[str, str], url: str, ref: str | None = None,
             dest: str = "src", lines: list[str] | None = None, insecure: bool = False, **options: object):
    spec = SourceSpec(type="git", url=url, ref=ref, **options)  # type: ignore[arg-type]
    return prepare_source(spec, dest, workspace=workspace, registry=registry, env=env,
                          log_line=(lines.append if lines is not None else None), allow_insecure_transport=insecure)


def head(path: Path) -> str:
    return git(path, "rev-parse", "HEAD")


@pytest.mark.parametrize(("ref", "expect", "branch"), [
    ("main", "c3", "main"),
    ("feature", "c4", "feature"),
    ("v1.0", "c1", None),
    ("light", "c1", None),
    ("refs/pull/7/head", "c5", None),
    ("pull/7/head", "c5", None),
    ("refs/heads/feature", "c4", "feature"),
    (None, "c3", "main"),
])
def test_refs_by_name(workspace, registry, env, origin, ref, expect, branch) -> None:
    result = checkout(workspace, registry, env, origin["url"], ref)
    assert result.revision == origin[expect]
    assert head(result.path) == origin[expect]
    current = subprocess.run(["git", "-C", str(result.path), "symbolic-ref", "-q", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip() or None
    assert current == branch
    assert git(result.path, "rev-list", "--count", "HEAD") == "1"  # shallow by default


@pytest.mark.parametrize("which", ["c3", "c2", "c5"])
def test_full_sha_tip_and_non_tip(workspace, registry, env, origin, which) -> None:
    result = checkout(workspace, registry, env, origin["url"], origin[which])
    assert head(result.path) == origin[which]


def test_short_sha(workspace, registry, env, origin) -> None:
    result = checkout(workspace, registry, env, origin["url"], origin["c2"][:8])
    assert head(result.path) == origin["c2"]


def test_full_history_brings_branches_and_tags(workspace, registry, env, origin) -> None:
    result = checkout(workspace, registry, env, origin["url"], "main", full_history=True)
    assert git(result.path, "rev-list", "--count", "HEAD") == "3"
    assert "v1.0" in git(result.path, "tag")
    assert "origin/feature" in git(result.path, "branch", "-r")
    assert git(result.path, "rev-parse", "--is-shallow-repository") == "false"


def test_depth(workspace, registry, env, origin) -> None:
    result = checkout(workspace, registry, env, origin["url"], "main", depth=2)
    assert git(result.path, "rev-list", "--count", "HEAD") == "2"


def test_missing_ref_names_ref_and_url_and_leaves_nothing(workspace, registry, env, origin) -> None:
    with pytest.raises(SourceError) as info:
        checkout(workspace, registry, env, origin["url"], "no-such-branch")
    assert "source_ref" in str(info.value)
    assert "'no-such-branch'" in str(info.value)
    assert str(origin["path"]) in str(info.value)
    assert not (Path(workspace.root) / "src").exists()


def test_missing_sha(workspace, registry, env, origin) -> None:
    with pytest.raises(SourceError, match="not found"):
        checkout(workspace, registry, env, origin["url"], "0" * 40)


def test_failed_checkout_keeps_previous_content(workspace, registry, env, origin) -> None:
    first = checkout(workspace, registry, env, origin["url"], "main")
    with pytest.raises(SourceError):
        checkout(workspace, registry, env, origin["url"], "nope")
    assert head(first.path) == origin["c3"]


def test_git_daemon(workspace, registry, env, origin, git_daemon) -> None:
    url = f"{git_daemon}/origin.git"
    for ref, expect in (("feature", "c4"), ("v1.0", "c1"), (origin["c2"], "c2"), (origin["c2"][:7], "c2")):
        result = checkout(workspace, registry, env, url, ref)
        assert head(result.path) == origin[expect]
    with pytest.raises(SourceError, match="'missing' not found in git://127.0.0.1"):
        checkout(workspace, registry, env, url, "missing")


def test_no_hooks_no_filters_from_config_or_repo(tmp_path, workspace, registry, env, origin) -> None:
    """A hostile global config (hooksPath + a filter driver) and a repo whose .gitattributes names it."""
    marker = tmp_path / "PWNED"
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    for name in ("post-checkout", "post-merge", "reference-transaction"):
        hook = hooks / name
        hook.write_text(f"#!/bin/sh\necho {name} >> {marker}\n")
        hook.chmod(0o755)
    evil_config = tmp_path / "gitconfig"
    evil_config.write_text(f"[core]\n\thooksPath = {hooks}\n\tfsmonitor = touch {marker}.fsmonitor\n"
                           f"[filter \"evil\"]\n\tsmudge = sh -c 'echo smudge >> {marker}; cat'\n\trequired = true\n")
    repo = Path(origin["path"])
    (repo / ".gitattributes").write_text("*.txt filter=evil\n")
    commit(repo, "notes.txt", "hello\n", "attributes")
    hostile_env = dict(env, GIT_CONFIG_GLOBAL=str(evil_config))
    # Without protection, a plain clone with that configuration runs the hooks and the filter.
    subprocess.run(["git", "clone", "-q", origin["url"], str(tmp_path / "plain")], env=hostile_env,
                   check=False, capture_output=True)
    assert marker.exists()
    marker.unlink()
    result = checkout(workspace, registry, hostile_env, origin["url"], "main")
    assert (result.path / "notes.txt").read_text() == "hello\n"
    assert not marker.exists()
    assert not Path(f"{marker}.fsmonitor").exists()
    assert not any((result.path / ".git" / "hooks").iterdir()) if (result.path / ".git" / "hooks").exists() else True


def test_submodules_on_request(tmp_path, workspace, registry, env, origin) -> None:
    sub = tmp_path / "subrepo"
    sub.mkdir()
    git(sub, "init", "-q", "-b", "main")
    commit(sub, "lib.txt", "library\n", "lib")
    repo = Path(origin["path"])
    git(repo, "submodule", "add", "-q", f"file://{sub}", "vendor/lib")
    git(repo, "commit", "-q", "-m", "add submodule")
    without = checkout(workspace, registry, env, origin["url"], "main", dest="a")
    assert not (without.path / "vendor" / "lib" / "lib.txt").exists()
    with_subs = checkout(workspace, registry, env, origin["url"], "main", dest="b", submodules=True)
    assert (with_subs.path / "vendor" / "lib" / "lib.txt").read_text() == "library\n"


def test_remote_superproject_cannot_pull_local_file_submodules(tmp_path, workspace, registry, env, origin,
                                                               git_daemon) -> None:
    """A repository fetched over the network names file:///.../private as a submodule: refused."""
    private = tmp_path / "private"
    private.mkdir()
    git(private, "init", "-q", "-b", "main")
    commit(private, "credentials.txt", "PRIVATE-DATA\n", "private")
    repo = Path(origin["path"])
    git(repo, "submodule", "add", "-q", f"file://{private}", "grab")
    git(repo, "commit", "-q", "-m", "grab local repo")
    git(Path(origin["bare"]), "fetch", "-q", str(repo), "+refs/heads/*:refs/heads/*")
    url = f"{git_daemon}/origin.git"
    with pytest.raises(SourceError, match="submodules"):
        checkout(workspace, registry, env, url, "main", submodules=True)
    assert "PRIVATE-DATA" not in all_text_under(Path(workspace.root))
    # The same checkout from a local superproject (trusted path) is allowed to use file:// submodules.
    ok = checkout(workspace, registry, env, origin["url"], "main", dest="local", submodules=True)
    assert (ok.path / "grab" / "credentials.txt").exists()


def test_url_credentials_are_used_but_never_shown_or_stored(tmp_path, workspace, registry, env, git_http,
                                                            origin) -> None:
    server, base = git_http
    token = server.password
    # Record every git argv through a wrapper placed first on PATH: the token must never be on argv.
    wrapper_dir = tmp_path / "wrap"
    wrapper_dir.mkdir()
    argv_log = tmp_path / "argv.log"
    real_git = __import__("shutil").which("git")
    (wrapper_dir / "git").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {argv_log}\nexec {real_git} "$@"\n')
    (wrapper_dir / "git").chmod(0o755)
    env = dict(env, PATH=f"{wrapper_dir}:{env['PATH']}")
    lines: list[str] = []
    url = f"http://{server.user}:{token}@{base.split('://')[1]}/origin.git"
    with pytest.raises(SourceError, match="sent unencrypted"):
        checkout(workspace, registry, env, url, "feature")  # plain http carrying a token: refused by default
    result = checkout(workspace, registry, env, url, "feature", lines=lines, insecure=True)
    assert head(result.path) == origin["c4"]
    assert server.paths  # authenticated requests reached the backend
    stored = all_text_under(result.path / ".git")
    shown = "\n".join(lines) + argv_log.read_text()
    for piece in [token, *fragments(token)]:
        assert piece not in stored
        assert piece not in shown
    assert registry.mask_text(f"x{token}y") == "x***y"
    # A failure message carries the URL, masked, and no part of the token.
    with pytest.raises(SourceError) as info:
        checkout(workspace, registry, env, url, "missing-ref", insecure=True)
    assert all(piece not in str(info.value) for piece in fragments(token))
    assert "missing-ref" in str(info.value)


def test_wrong_credentials_fail_fast_without_prompting(workspace, registry, env, git_http) -> None:
    server, base = git_http
    url = f"http://{server.user}:wrong-password-123@{base.split('://')[1]}/origin.git"
    with pytest.raises(SourceError) as info:
        checkout(workspace, registry, env, url, "main", insecure=True)
    assert "wrong-password-123" not in str(info.value)
    url_no_creds = f"{base}/origin.git"
    with pytest.raises(SourceError):
        checkout(workspace, registry, env, url_no_creds, "main")  # would hang on a prompt without GIT_TERMINAL_PROMPT=0


def test_vcs_auth_dir_from_the_worker(tmp_path, workspace, registry, env, git_http, origin) -> None:
    server, base = git_http
    auth = Path(workspace.root) / ".reactorcide" / "vcs-auth"
    auth.mkdir(parents=True)
    creds = auth / "credentials"
    host = base.split("://")[1]
    creds.write_text(f"http://{server.user}:{server.password}@{host}/origin.git\n")
    (auth / "gitconfig").write_text(f"[credential]\n\thelper = store --file {creds}\n\tuseHttpPath = true\n")
    worker_env = dict(env, REACTORCIDE_VCS_AUTH_DIR=str(auth))
    worker_env.pop("GIT_CONFIG_GLOBAL")
    result = checkout(workspace, registry, worker_env, f"{base}/origin.git", "main")
    assert head(result.path) == origin["c3"]
    assert registry.mask_text(server.password) == "***"  # registered from the credentials file


def test_git_environment_cannot_redirect_git(tmp_path, workspace, registry, env, origin) -> None:
    """GIT_DIR / GIT_WORK_TREE inherited from the caller would make git write elsewhere: dropped."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    hostile = dict(env, GIT_DIR=str(elsewhere / ".git"), GIT_WORK_TREE=str(elsewhere),
                   GIT_CONFIG_PARAMETERS="'core.hooksPath'='/tmp'")
    result = checkout(workspace, registry, hostile, origin["url"], "main")
    assert (result.path / ".git").is_dir()
    assert list(elsewhere.iterdir()) == []


def test_url_and_ref_option_injection_refused(workspace, registry, env, origin) -> None:
    with pytest.raises(SourceError):
        checkout(workspace, registry, env, "--upload-pack=touch /tmp/x", "main")
    with pytest.raises(Exception, match="must not start with '-'"):
        SourceSpec(type="git", url=origin["url"], ref="--output=/tmp/x")


def test_checkout_is_path_safe_when_dest_is_a_symlink(tmp_path, workspace, registry, env, origin) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, Path(workspace.root) / "src")
    with pytest.raises(Exception, match="symlink"):
        checkout(workspace, registry, env, origin["url"], "main")
    assert list(outside.iterdir()) == []


def test_modes_and_symlinks_in_checkout(workspace, registry, env, origin) -> None:
    repo = Path(origin["path"])
    (repo / "run.sh").write_text("#!/bin/sh\n")
    (repo / "run.sh").chmod(0o755)
    os.symlink("run.sh", repo / "alias")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "exec")
    result = checkout(workspace, registry, clean_env(Path(workspace.root)), origin["url"], "main")
    assert os.stat(result.path / "run.sh").st_mode & stat.S_IXUSR
    assert os.readlink(result.path / "alias") == "run.sh"


@pytest.mark.parametrize("ref", ["main:refs/heads/evil", "a..b", "has space", "x~1", "y^", "z?", "refs/heads/*",
                                 "a\\b", "main@{0}", "refs//x", "x.lock"])
def test_invalid_ref_names_refused_before_any_fetch(workspace, registry, env, origin, ref) -> None:
    with pytest.raises(SourceError, match="not a valid git ref name"):
        checkout(workspace, registry, env, origin["url"], ref)


def test_credentials_not_given_to_the_host_a_redirect_names(tmp_path, workspace, registry, env, git_http,
                                                             evil_http) -> None:
    server, base = git_http
    evil, evil_base = evil_http
    server.redirect_to = evil_base
    token = server.password
    url = f"http://{server.user}:{token}@{base.split('://')[1]}/origin.git"
    with pytest.raises(SourceError):
        checkout(workspace, registry, env, url, "main", insecure=True)
    sent = [h for h in evil.auth_seen if h]
    decoded = [__import__("base64").b64decode(h.split()[1]).decode() for h in sent]
    assert all(token not in d for d in decoded)
    # Without the host check, a helper that answers every request hands the token to the other host.
    naive = ('!f() { test "$1" = get || exit 0; printf "username=%s\\npassword=%s\\n" '
             f'"{server.user}" "{token}"; }}; f')
    subprocess.run(["git", "-c", f"credential.helper={naive}", "ls-remote", f"{base}/origin.git"],
                   env=dict(env, GIT_TERMINAL_PROMPT="0"), capture_output=True, timeout=60)
    leaked = [__import__("base64").b64decode(h.split()[1]).decode() for h in evil.auth_seen if h]
    assert any(token in d for d in leaked)
