"""Fixtures for the source tests: real repositories, a git daemon and a git http-backend on 127.0.0.1,
an HTTPS file server with a self-signed certificate, and a real SecretRegistry."""

from __future__ import annotations

import base64
import contextlib
import http.server
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from srchelpers import clean_env, commit, free_port, git, self_signed, serve_files, wait_port

from runnerlib.security.paths import Workspace
from runnerlib.security.registry import SecretRegistry

GIT = shutil.which("git")
HG = shutil.which("hg")
SVN = shutil.which("svn")


@pytest.fixture
def registry() -> SecretRegistry:
    return SecretRegistry()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    return clean_env(home)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    root = tmp_path / "job"
    root.mkdir()
    ws = Workspace(root)
    yield ws
    ws.close()


@pytest.fixture
def origin(tmp_path: Path) -> dict[str, object]:
    """A repository with three commits on main, an annotated and a light tag, a feature branch, and a
    pull ref (refs/pull/7/head) on a commit that no branch contains. Also a bare copy for servers."""
    repo = tmp_path / "origin"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    c1 = commit(repo, "README.md", "one\n", "first")
    git(repo, "tag", "-a", "v1.0", "-m", "release 1.0")
    git(repo, "tag", "light", c1)
    c2 = commit(repo, "src/app.py", "print('two')\n", "second")
    c3 = commit(repo, "src/app.py", "print('three')\n", "third")
    git(repo, "checkout", "-q", "-b", "feature")
    c4 = commit(repo, "feature.txt", "feature\n", "feature work")
    git(repo, "checkout", "-q", "--detach", c3)
    c5 = commit(repo, "pr.txt", "pull request\n", "pr work")
    git(repo, "update-ref", "refs/pull/7/head", c5)
    git(repo, "checkout", "-q", "main")
    bare = tmp_path / "srv" / "origin.git"
    bare.parent.mkdir()
    git(tmp_path, "clone", "-q", "--mirror", str(repo), str(bare))
    return {"path": repo, "bare": bare, "url": f"file://{repo}", "c1": c1, "c2": c2, "c3": c3, "c4": c4, "c5": c5}


@pytest.fixture
def git_daemon(origin: dict[str, object]):
    """git:// on 127.0.0.1 serving the bare repositories next to origin.git."""
    base = Path(origin["bare"]).parent  # type: ignore[arg-type]
    port = free_port()
    proc = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={base}",
                             "--listen=127.0.0.1", f"--port={port}", str(base)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        yield f"git://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class _GitHTTP(http.server.BaseHTTPRequestHandler):
    """git http-backend as CGI behind HTTP Basic auth (credentials set on the server object)."""

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def _cgi(self) -> None:
        server = self.server
        server.auth_seen.append(self.headers.get("Authorization"))  # type: ignore[attr-defined]
        if server.redirect_to and "/info/refs" in self.path:  # type: ignore[attr-defined]
            # A moved (or hostile) server sends the client elsewhere before asking for credentials.
            self.send_response(302)
            self.send_header("Location", server.redirect_to + self.path)  # type: ignore[attr-defined]
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        expected = "Basic " + base64.b64encode(f"{server.user}:{server.password}".encode()).decode()  # type: ignore[attr-defined]
        if self.headers.get("Authorization") != expected:
            server.denied += 1  # type: ignore[attr-defined]
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        server.paths.append(self.path)  # type: ignore[attr-defined]
        path, _, query = self.path.partition("?")
        body = b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        elif self.headers.get("Content-Length"):
            body = self.rfile.read(int(self.headers["Content-Length"]))
        env = {"PATH": os.environ.get("PATH", os.defpath), "GIT_PROJECT_ROOT": server.base,  # type: ignore[attr-defined]
               "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command,
               "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
               "REMOTE_USER": server.user, "REMOTE_ADDR": "127.0.0.1",  # type: ignore[attr-defined]
               "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
               "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""), "GIT_CONFIG_NOSYSTEM": "1",
               "GIT_CONFIG_GLOBAL": "/dev/null", "HOME": server.base}  # type: ignore[attr-defined]
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def start_git_http(base: str, user: str, password: str) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GitHTTP)
    server.base = base  # type: ignore[attr-defined]
    server.user = user  # type: ignore[attr-defined]
    server.password = password  # type: ignore[attr-defined]
    server.denied = 0  # type: ignore[attr-defined]
    server.paths = []  # type: ignore[attr-defined]
    server.auth_seen = []  # type: ignore[attr-defined]
    server.redirect_to = None  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@contextlib.contextmanager
def serving_git(origin: dict[str, object], user: str, password: str):
    """A git http-backend server for origin's bare repository; yields (server, base URL without credentials)."""
    server = start_git_http(str(Path(origin["bare"]).parent), user, password)  # type: ignore[arg-type]
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def git_http(origin: dict[str, object]):
    """http://127.0.0.1:PORT/origin.git behind Basic auth; yields (server, base URL without credentials)."""
    with serving_git(origin, "ci-bot", "tok3n-Xq9vR2mZ8pL4wK7s") as served:
        yield served


@pytest.fixture
def evil_http(origin: dict[str, object]):
    """A second git server (another host:port) that records every Authorization header it is sent."""
    with serving_git(origin, "someone-else", "other-password") as served:
        yield served


@pytest.fixture
def file_servers(tmp_path: Path):
    """(https server, http server, cert path) serving tmp/www."""
    www = tmp_path / "www"
    www.mkdir()
    cert, key = self_signed(tmp_path)
    https = serve_files(www, tls=(cert, key))
    plain = serve_files(www)
    try:
        yield {"www": www, "https": https, "http": plain, "cert": cert,
               "https_url": f"https://127.0.0.1:{https.server_address[1]}",
               "http_url": f"http://127.0.0.1:{plain.server_address[1]}"}
    finally:
        for s in (https, plain):
            s.shutdown()
            s.server_close()
