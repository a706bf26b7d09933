"""copy, hg, svn and none strategies, SourceSpec validation, and missing programs."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from srchelpers import all_text_under, fragments

from runnerlib.security.paths import PathPolicyError
from runnerlib.source import SourceError, SourceSpec, prepare_source
from runnerlib.source.base import register_url_credentials, strip_credentials

HG = shutil.which("hg")
SVN = shutil.which("svn")


def prep(workspace, registry, spec: SourceSpec, dest: str = "src", env: dict[str, str] | None = None,
         insecure: bool = False):
    return prepare_source(spec, dest, workspace=workspace, registry=registry, env=env,
                          allow_insecure_transport=insecure)


# -- copy -------------------------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "tree"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "mod.py").write_text("x = 1\n")
    (src / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(src / "run.sh", 0o750)
    os.symlink("pkg/mod.py", src / "alias")
    return src


def test_copy_keeps_content_modes_and_inner_links(workspace, registry, tree) -> None:
    result = prep(workspace, registry, SourceSpec(type="copy", url=str(tree)))
    assert (result.path / "pkg" / "mod.py").read_text() == "x = 1\n"
    assert stat.S_IMODE(os.stat(result.path / "run.sh").st_mode) == 0o750
    assert os.readlink(result.path / "alias") == "pkg/mod.py"
    assert result.details["files"] == 2


def test_copy_refuses_a_link_out_of_the_source_and_leaves_nothing(tmp_path, workspace, registry, tree) -> None:
    (tmp_path / "private").write_text("PRIVATE")
    os.symlink(tmp_path / "private", tree / "pkg" / "leak")
    workspace.makedirs("src")
    workspace.write_text("src/before", "b")
    with pytest.raises(SourceError, match="symlink"):
        prep(workspace, registry, SourceSpec(type="copy", url=f"file://{tree}"))
    assert os.listdir(Path(workspace.root) / "src") == ["before"]
    assert "PRIVATE" not in all_text_under(Path(workspace.root))
    # Without protection (shutil.copytree follows links by default) the private file is copied in.
    shutil.copytree(tree, tmp_path / "naive", symlinks=False)
    assert (tmp_path / "naive" / "pkg" / "leak").read_text() == "PRIVATE"


def test_copy_skips_special_files(workspace, registry, tree) -> None:
    os.mkfifo(tree / "fifo")
    result = prep(workspace, registry, SourceSpec(type="copy", url=str(tree)))
    assert not os.path.lexists(result.path / "fifo")
    assert result.details["skipped"] == ["fifo"]


def test_copy_source_must_exist_and_not_contain_the_destination(tmp_path, workspace, registry) -> None:
    with pytest.raises(SourceError, match="not a directory"):
        prep(workspace, registry, SourceSpec(type="copy", url=str(tmp_path / "missing")))
    with pytest.raises(SourceError, match="contains the destination"):
        prep(workspace, registry, SourceSpec(type="copy", url=str(workspace.root)))
    with pytest.raises(SourceError, match="absolute"):
        prep(workspace, registry, SourceSpec(type="copy", url="relative/dir"))


# -- none and spec validation -----------------------------------------------------------------------

def test_none_does_nothing(workspace, registry) -> None:
    result = prep(workspace, registry, SourceSpec(type="none"))
    assert result.type == "none"
    assert not (Path(workspace.root) / "src").exists()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"type": "git"}, "source_url is required for source_type git"),
    ({"type": "svn", "url": "file:///x", "ref": "-r5"}, "must not start with '-'"),
    ({"type": "git", "url": "file:///x\nmalicious"}, "control characters"),
    ({"type": "cvs", "url": "x"}, "source_type: must be one of"),
])
def test_spec_errors_name_the_field(kwargs, message) -> None:
    with pytest.raises(SourceError, match=message):
        SourceSpec.from_fields(kwargs.get("type"), kwargs.get("url"), kwargs.get("ref"))


def test_spec_from_worker_env() -> None:
    spec = SourceSpec.from_env({"REACTORCIDE_CI_SOURCE_TYPE": "git", "REACTORCIDE_CI_SOURCE_URL": "https://h/r.git",
                                "REACTORCIDE_CI_SOURCE_REF": "main"}, ci=True)
    assert (spec.type, spec.url, spec.ref, spec.field_prefix) == ("git", "https://h/r.git", "main", "ci_source")
    assert SourceSpec.from_env({}).type == "none"


def test_destination_outside_the_workspace_is_refused(workspace, registry, tree) -> None:
    with pytest.raises(PathPolicyError, match="inside the workspace root"):
        prep(workspace, registry, SourceSpec(type="copy", url=str(tree)), dest="/tmp/elsewhere")


def test_url_credentials_registered_and_stripped(registry) -> None:
    url = "https://x-access-token:ghs_S3cr3tT0k3nValue@github.com/o/r.git?private_token=glpat-Abc123Def456"
    kinds = register_url_credentials(url, registry, source="source_url")
    assert "password" in kinds and "query:private_token" in kinds
    masked = registry.mask_text(url)
    for secret in ("ghs_S3cr3tT0k3nValue", "glpat-Abc123Def456"):
        assert all(piece not in masked for piece in fragments(secret))
    assert strip_credentials(url) == "https://github.com/o/r.git?private_token=glpat-Abc123Def456"
    assert strip_credentials("ssh://git@host/r.git") == "ssh://git@host/r.git"  # a user name is no secret
    register_url_credentials("https://ghp_OnlyTokenAsUser99@github.com/o/r", registry, source="t")
    assert registry.mask_text("ghp_OnlyTokenAsUser99") == "***"


# -- hg -------------------------------------------------------------------------------------------

def _hg(cwd: Path, *args: str) -> str:
    env = dict(os.environ, HGRCPATH="", HGPLAIN="1", HGUSER="Ada <ada@example.com>")
    return subprocess.run(["hg", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def hg_repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    repo = tmp_path_factory.mktemp("hg") / "hgrepo"
    repo.mkdir()
    _hg(repo, "init")
    (repo / "a.txt").write_text("one\n")
    _hg(repo, "add", "a.txt")
    _hg(repo, "commit", "-m", "one")
    first = _hg(repo, "id", "--debug", "-i")
    _hg(repo, "tag", "v1", "-r", first)
    (repo / "a.txt").write_text("two\n")
    _hg(repo, "commit", "-m", "two")
    tip = _hg(repo, "id", "--debug", "-i")
    return {"url": str(repo), "first": first, "tip": tip}


@pytest.mark.skipif(not HG, reason="hg (mercurial) is not installed")
@pytest.mark.parametrize(("ref", "expect"), [(None, "tip"), ("0", "first"), ("v1", "first"), ("default", "tip")])
def test_hg_checkout(workspace, registry, hg_repo, ref, expect) -> None:
    result = prep(workspace, registry, SourceSpec(type="hg", url=hg_repo["url"], ref=ref))
    assert result.revision == hg_repo[expect]
    assert (result.path / "a.txt").read_text() == ("two\n" if expect == "tip" else "one\n")


@pytest.mark.skipif(not HG, reason="hg (mercurial) is not installed")
def test_hg_missing_revision(workspace, registry, hg_repo) -> None:
    with pytest.raises(SourceError) as info:
        prep(workspace, registry, SourceSpec(type="hg", url=hg_repo["url"], ref="no-such-rev"))
    assert "source_ref" in str(info.value) and "'no-such-rev'" in str(info.value)
    assert hg_repo["url"] in str(info.value)
    assert not (Path(workspace.root) / "src").exists()


@pytest.mark.skipif(not HG, reason="hg (mercurial) is not installed")
def test_hg_ignores_user_hooks(tmp_path, workspace, registry, hg_repo) -> None:
    marker = tmp_path / "HG-PWNED"
    hgrc = tmp_path / "evil-hgrc"
    hgrc.write_text(f"[hooks]\npreupdate = touch {marker}\nupdate = touch {marker}\n")
    env = dict(os.environ, HGRCPATH=str(hgrc))
    subprocess.run(["hg", "clone", "-q", hg_repo["url"], str(tmp_path / "plain")], env=env, check=True)
    assert marker.exists()  # the hostile config does run hooks in a plain clone
    marker.unlink()
    prep(workspace, registry, SourceSpec(type="hg", url=hg_repo["url"]), env=env)
    assert not marker.exists()


# -- svn ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def svn_repo(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp_path = tmp_path_factory.mktemp("svn")
    repo = tmp_path / "svnrepo"
    subprocess.run(["svnadmin", "create", str(repo)], check=True)
    work = tmp_path / "svnwork"
    url = f"file://{repo}"
    subprocess.run(["svn", "checkout", "-q", url, str(work)], check=True)
    (work / "a.txt").write_text("r1\n")
    subprocess.run(["svn", "add", "-q", "a.txt"], cwd=work, check=True)
    subprocess.run(["svn", "commit", "-q", "-m", "r1"], cwd=work, check=True)
    (work / "a.txt").write_text("r2\n")
    subprocess.run(["svn", "commit", "-q", "-m", "r2"], cwd=work, check=True)
    return url


@pytest.mark.skipif(not SVN or not shutil.which("svnadmin"), reason="svn (subversion) is not installed")
@pytest.mark.parametrize(("ref", "rev", "content"), [(None, "2", "r2\n"), ("1", "1", "r1\n"), ("r1", "1", "r1\n"),
                                                     ("HEAD", "2", "r2\n")])
def test_svn_checkout(workspace, registry, svn_repo, ref, rev, content) -> None:
    result = prep(workspace, registry, SourceSpec(type="svn", url=svn_repo, ref=ref))
    assert result.revision == rev
    assert (result.path / "a.txt").read_text() == content


@pytest.mark.skipif(not SVN or not shutil.which("svnadmin"), reason="svn (subversion) is not installed")
def test_svn_missing_revision(workspace, registry, svn_repo) -> None:
    with pytest.raises(SourceError) as info:
        prep(workspace, registry, SourceSpec(type="svn", url=svn_repo, ref="99"))
    assert "source_ref" in str(info.value) and "'99'" in str(info.value) and svn_repo in str(info.value)
    with pytest.raises(SourceError, match="not a Subversion revision"):
        prep(workspace, registry, SourceSpec(type="svn", url=svn_repo, ref="main; rm -rf /"))


# -- missing programs -----------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "package"), [("git", "git"), ("hg", "mercurial"), ("svn", "subversion")])
def test_missing_program_names_the_debian_package(tmp_path, workspace, registry, kind, package) -> None:
    empty = tmp_path / "emptybin"
    empty.mkdir()
    with pytest.raises(SourceError) as info:
        prep(workspace, registry, SourceSpec(type=kind, url="file:///nowhere"), env={"PATH": str(empty)})
    assert f"`{kind}` program is not installed" in str(info.value)
    assert f"Debian package `{package}`" in str(info.value)


class _AuthProxy(__import__("http.server").server.BaseHTTPRequestHandler):
    """Basic auth in front of `hg serve` (which has no auth of its own)."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def _forward(self) -> None:
        import base64
        import urllib.request

        expected = "Basic " + base64.b64encode(b"hgbot:hgS3cret-Pa55word").decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="hg"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "authorization")}
        req = urllib.request.Request(self.server.upstream + self.path, data=body or None, headers=headers,  # type: ignore[attr-defined]
                                     method=self.command)
        with urllib.request.urlopen(req) as resp:
            payload = resp.read()
            self.send_response(resp.status)
            for key, value in resp.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.mark.skipif(not HG, reason="hg (mercurial) is not installed")
def test_hg_credentials_not_on_argv_nor_stored(tmp_path, workspace, registry, hg_repo) -> None:
    import http.server
    import threading

    from srchelpers import free_port, wait_port

    port = free_port()
    serve = subprocess.Popen(["hg", "serve", "-a", "127.0.0.1", "-p", str(port), "-R", hg_repo["url"]],
                             env=dict(os.environ, HGRCPATH=""), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AuthProxy)
    proxy.upstream = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        wait_port(port, serve)
        wrapper_dir = tmp_path / "wrap"
        wrapper_dir.mkdir()
        argv_log = tmp_path / "argv.log"
        (wrapper_dir / "hg").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {argv_log}\nexec {HG} "$@"\n')
        (wrapper_dir / "hg").chmod(0o755)
        env = dict(os.environ, PATH=f"{wrapper_dir}:{os.environ['PATH']}")
        url = f"http://hgbot:hgS3cret-Pa55word@127.0.0.1:{proxy.server_address[1]}/"
        with pytest.raises(SourceError, match="sent unencrypted"):
            prep(workspace, registry, SourceSpec(type="hg", url=url), env=env)
        result = prep(workspace, registry, SourceSpec(type="hg", url=url), env=env, insecure=True)
        assert result.revision == hg_repo["tip"]
        for piece in fragments("hgS3cret-Pa55word"):
            assert piece not in argv_log.read_text()
            assert piece not in all_text_under(result.path / ".hg")
        with pytest.raises(SourceError) as info:
            prep(workspace, registry, SourceSpec(type="hg", url=url.replace("Pa55word", "wrong-guess")), env=env,
                 insecure=True)
        assert "wrong-guess" not in str(info.value)
    finally:
        proxy.shutdown()
        proxy.server_close()
        serve.terminate()
        serve.wait(timeout=10)


@pytest.mark.skipif(not SVN or not shutil.which("svnserve"), reason="svnserve (subversion) is not installed")
def test_svn_credentials_on_stdin_never_argv_nor_stored(tmp_path, workspace, registry) -> None:
    from srchelpers import free_port, wait_port

    password = "svnS3cret-Pw0rd"
    root = tmp_path / "svnroot"
    root.mkdir()
    subprocess.run(["svnadmin", "create", str(root / "repo")], check=True)
    (root / "repo" / "conf" / "svnserve.conf").write_text(
        "[general]\nanon-access = none\nauth-access = write\npassword-db = passwd\nrealm = test\n")
    (root / "repo" / "conf" / "passwd").write_text(f"[users]\nsvnbot = {password}\n")
    port = free_port()
    server = subprocess.Popen(["svnserve", "-d", "--foreground", "--listen-host", "127.0.0.1", "--listen-port",
                               str(port), "-r", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, server)
        base = f"svn://127.0.0.1:{port}/repo"
        subprocess.run(["svn", "mkdir", "-q", "-m", "init", "--non-interactive", "--no-auth-cache",
                        "--config-dir", str(tmp_path / "cfg"), "--username", "svnbot", "--password", password,
                        f"{base}/trunk"], check=True)
        wrapper_dir = tmp_path / "wrap"
        wrapper_dir.mkdir()
        argv_log = tmp_path / "argv.log"
        (wrapper_dir / "svn").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {argv_log}\nexec {SVN} "$@"\n')
        (wrapper_dir / "svn").chmod(0o755)
        env = dict(os.environ, PATH=f"{wrapper_dir}:{os.environ['PATH']}", HOME=str(tmp_path))
        url = f"svn://svnbot:{password}@127.0.0.1:{port}/repo/trunk"
        with pytest.raises(SourceError, match="sent unencrypted"):
            prep(workspace, registry, SourceSpec(type="svn", url=url), env=env)
        result = prep(workspace, registry, SourceSpec(type="svn", url=url), env=env, insecure=True)
        assert result.revision == "1"
        for piece in fragments(password):
            assert piece not in argv_log.read_text()
            assert piece not in all_text_under(result.path)
            assert piece not in all_text_under(tmp_path / "home") if (tmp_path / "home").exists() else True
        with pytest.raises(SourceError) as info:
            prep(workspace, registry, SourceSpec(type="svn", url=url.replace("Pw0rd", "Wrong99")), env=env,
                 insecure=True)
        assert "Wrong99" not in str(info.value)
    finally:
        server.terminate()
        server.wait(timeout=10)
