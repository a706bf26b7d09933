"""The one interface behind every source strategy: SourceSpec in, a prepared directory out.

A strategy is a function `prepare(spec, staged, ctx)` registered under its type name. prepare_source()
validates the spec, stages the new content privately inside the destination (Workspace.staging), and
moves it into place only when the strategy succeeded: a failed checkout or a refused archive leaves the
destination as it was. Every line a strategy logs or raises has passed through the job's secret
registry; URL credentials are registered before anything runs.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runnerlib.security.paths import Staged, Workspace

log = logging.getLogger("runnerlib.source")

SourceType = Literal["none", "git", "copy", "tarball", "hg", "svn"]
SOURCE_TYPES: tuple[str, ...] = ("none", "git", "copy", "tarball", "hg", "svn")

# Query parameters whose values are credentials in practice (GitLab, S3/GCS presigned URLs, generic APIs).
SENSITIVE_QUERY_KEYS = frozenset({
    "token", "private_token", "access_token", "job_token", "auth", "authorization", "key", "api_key",
    "apikey", "password", "passwd", "secret", "sig", "signature", "x-amz-signature", "x-amz-credential",
    "x-amz-security-token", "x-goog-signature", "x-goog-credential",
})


class SecretSink(Protocol):
    """The part of runnerlib.security.registry.SecretRegistry that source preparation uses."""

    def add(self, value: str | bytes, *, source: str) -> bool: ...

    def mask(self, data: bytes) -> bytes: ...

    def mask_text(self, text: str) -> str: ...


class SourceError(Exception):
    """Source preparation failed; the message is already masked and names the field or source."""


class SourceLimits(BaseModel):
    """Limits against archive bombs and runaway downloads (tarball strategy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_entries: int = Field(default=200_000, gt=0, description="most archive members accepted")
    max_total_bytes: int = Field(default=8 << 30, gt=0, description="most bytes extracted in total")
    max_download_bytes: int = Field(default=4 << 30, gt=0, description="largest archive downloaded")
    max_name_length: int = Field(default=4096, gt=0, description="longest member name accepted")


class SourceSpec(BaseModel):
    """What to prepare: a strategy type and its options.

    >>> SourceSpec(type="git", url="https://example.com/repo.git", ref="main")
    SourceSpec(type='git', url='https://example.com/repo.git', ref='main', ...)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: SourceType = "none"
    url: str | None = Field(default=None, description="URL or local path of the source")
    ref: str | None = Field(default=None, description="branch, tag, SHA, refs/pull/N/head, or revision")
    depth: int = Field(default=1, ge=1, description="commits to fetch when shallow (git)")
    full_history: bool = Field(default=False, description="fetch all history, branches and tags (git)")
    submodules: bool = Field(default=False, description="fetch submodules (git) or externals (svn)")
    limits: SourceLimits = Field(default_factory=SourceLimits)
    field_prefix: str = Field(default="source", description="prefix used in error messages: source / ci_source")

    @field_validator("url", "ref")
    @classmethod
    def _no_control(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.strip() == "":
            return None
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ValueError("must not contain control characters (NUL, newline, ...)")
        return value

    @model_validator(mode="after")
    def _url_required(self) -> SourceSpec:
        if self.type != "none" and not self.url:
            raise ValueError(f"{self.field_prefix}_url is required for {self.field_prefix}_type {self.type}")
        if self.ref is not None and self.ref.startswith("-"):
            raise ValueError(f"{self.field_prefix}_ref must not start with '-'")
        return self

    @classmethod
    def from_fields(cls, type: str | None, url: str | None = None, ref: str | None = None, *,
                    prefix: str = "source", **options: object) -> SourceSpec:
        """Build a spec from the worker's three fields (an empty or missing type means none).

        Raises SourceError with the field name on invalid input.
        """
        kind = (type or "none").strip().lower()
        if kind not in SOURCE_TYPES:
            raise SourceError(f"{prefix}_type: must be one of {', '.join(SOURCE_TYPES)} (got {type!r})")
        try:
            return cls(type=kind, url=url, ref=ref, field_prefix=prefix, **options)  # type: ignore[arg-type]
        except ValueError as exc:
            errors = getattr(exc, "errors", None)
            if callable(errors):
                first = errors()[0]
                where = ".".join(str(p) for p in first.get("loc", ())) or prefix
                raise SourceError(f"{prefix}: {where}: {first.get('msg')}") from None
            raise SourceError(f"{prefix}: {exc}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, ci: bool = False) -> SourceSpec:
        """The spec the worker describes in REACTORCIDE_[CI_]SOURCE_TYPE / _URL / _REF."""
        prefix = "REACTORCIDE_CI_SOURCE_" if ci else "REACTORCIDE_SOURCE_"
        return cls.from_fields(environ.get(prefix + "TYPE"), environ.get(prefix + "URL"),
                               environ.get(prefix + "REF"), prefix="ci_source" if ci else "source")


@dataclass
class PrepareContext:
    """Everything a strategy may use besides the spec and its staging directory."""

    workspace: Workspace
    registry: SecretSink
    allow_insecure_transport: bool = False
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    log: Callable[[str], None] = log.info
    timeout: float | None = None

    def say(self, message: str) -> None:
        """Log one masked line."""
        self.log(self.registry.mask_text(message))

    def fail(self, message: str) -> SourceError:
        """A SourceError whose message has been masked."""
        return SourceError(self.registry.mask_text(message))


@dataclass
class PreparedSource:
    """Result of prepare_source: where the content is, and what the strategy learned (e.g. the commit)."""

    type: str
    path: Path
    revision: str | None = None
    details: dict[str, object] = field(default_factory=dict)


Strategy = Callable[[SourceSpec, Staged, PrepareContext], PreparedSource | None]


# -- helpers shared by the strategies ------------------------------------------------------------

def register_url_credentials(url: str, registry: SecretSink, *, source: str) -> list[str]:
    """Register the userinfo (user:password, or a token used as user name) and sensitive query values.

    Returns the kinds registered (never the values), e.g. ["password", "query:token"].
    """
    kinds: list[str] = []
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return kinds
    if parts.scheme in ("", "file"):
        return kinds
    userinfo, sep, _ = parts.netloc.rpartition("@")
    if sep and userinfo:
        user, colon, password = userinfo.partition(":")
        for value, kind in ((password, "password"), (urllib.parse.unquote(password), "password"),
                            (userinfo, "userinfo")):
            if colon and value and registry.add(value, source=f"{source} {kind}"):
                kinds.append(kind)
        # A bare token used as the user name (https://TOKEN@host/...) is common; ssh-style user names
        # (git@host) are not secrets and are left alone.
        if not colon and parts.scheme in ("http", "https") and user:
            for value in {user, urllib.parse.unquote(user)}:
                if registry.add(value, source=f"{source} user token"):
                    kinds.append("user token")
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=False):
        if key.lower() in SENSITIVE_QUERY_KEYS and value:
            for v in {value, urllib.parse.quote(value, safe="")}:
                if registry.add(v, source=f"{source} query {key}"):
                    kinds.append(f"query:{key}")
    return kinds


def refuse_cleartext_credentials(spec: SourceSpec, ctx: PrepareContext) -> None:
    """Credentials in an http:// (or svn://) URL would cross the network in clear: refuse them unless
    the user allowed insecure transport. URLs without credentials are not affected."""
    url = spec.url or ""
    scheme = url.split(":", 1)[0].lower()
    user, _ = url_credentials(url)
    if user is not None and scheme in ("http", "svn") and not ctx.allow_insecure_transport:
        raise SourceError(f"{spec.field_prefix}_url: credentials in a {scheme}:// URL would be sent unencrypted; "
                          f"use https:// (or svn+ssh://), or pass --allow-insecure-transport on an isolated network")


def check_vcs_url(spec: SourceSpec, ctx: PrepareContext) -> tuple[str, str, str]:
    """The checks every VCS strategy (git, hg, svn) makes first; returns (url, url field, ref field).

    Refused: a URL starting with '-' (the program would read it as an option) and credentials that
    would cross the network in clear (refuse_cleartext_credentials).
    """
    field = f"{spec.field_prefix}_url"
    url = spec.url or ""
    if not url:
        raise SourceError(f"{field}: is required for {spec.field_prefix}_type {spec.type}")
    if url.startswith("-"):
        raise SourceError(f"{field}: must not start with '-'")
    refuse_cleartext_credentials(spec, ctx)
    return url, field, f"{spec.field_prefix}_ref"


def strip_credentials(url: str) -> str:
    """`url` without its userinfo password/token (what may be stored on disk or shown)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if parts.scheme not in ("http", "https", "ssh", "git", "ftp", "ftps", "svn", "svn+ssh"):
        return url
    userinfo, sep, host = parts.netloc.rpartition("@")
    if not sep:
        return url
    user, colon, _ = userinfo.partition(":")
    keep = "" if parts.scheme in ("http", "https") else (user + "@")
    return urllib.parse.urlunsplit((parts.scheme, keep + host, parts.path, parts.query, parts.fragment))


def url_credentials(url: str) -> tuple[str | None, str | None]:
    """(user, password) from the URL's userinfo, decoded; (None, None) when absent."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return None, None
    userinfo, sep, _ = parts.netloc.rpartition("@")
    if not sep or not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    return urllib.parse.unquote(user), (urllib.parse.unquote(password) if colon else None)


def is_local_url(url: str) -> bool:
    """True for file:// URLs and plain paths (used to decide protocol.file.allow, copy sources...)."""
    return url.startswith("file://") or url.startswith("/") or "://" not in url and ":" not in url.split("/")[0]


def find_program(name: str, package: str, ctx: PrepareContext) -> str:
    """The absolute path of `name` on PATH, or a SourceError naming the Debian package to install."""
    found = shutil.which(name, path=ctx.env.get("PATH", os.defpath))
    if not found:
        raise SourceError(f"the `{name}` program is not installed; install the Debian package `{package}` "
                          f"(apt-get install {package})")
    return found


@dataclass
class RunResult:
    """A finished helper program: exit code and its masked output."""

    returncode: int
    stdout: str
    stderr: str


def run_tool(argv: Sequence[str], ctx: PrepareContext, *, env: Mapping[str, str], cwd: str | None = None,
             input_text: str | None = None, pass_fds: Sequence[int] = ()) -> RunResult:
    """Run a VCS program with no stdin prompt, capture and MASK its output before anyone sees it."""
    try:
        proc = subprocess.run(
            list(argv), env=dict(env), cwd=cwd, capture_output=True, pass_fds=tuple(pass_fds),
            input=(input_text.encode() if input_text is not None else None),
            stdin=None if input_text is not None else subprocess.DEVNULL,
            # No controlling terminal: ssh's host-key question and any tool that opens /dev/tty fail
            # at once instead of waiting for an answer that never comes.
            start_new_session=True,
            timeout=ctx.timeout, check=False,
        )
    except subprocess.TimeoutExpired:
        raise ctx.fail(f"{os.path.basename(argv[0])} timed out after {ctx.timeout} s") from None
    out = ctx.registry.mask(proc.stdout).decode("utf-8", "replace")
    err = ctx.registry.mask(proc.stderr).decode("utf-8", "replace")
    return RunResult(proc.returncode, out, err)


def git_config_env(pairs: Sequence[tuple[str, str]], *, start: int = 0) -> dict[str, str]:
    """`git -c key=value` for every pair, as environment variables (GIT_CONFIG_COUNT/KEY_n/VALUE_n): git treats
    them as command-line config, which it trusts for protected keys such as safe.directory. `start` appends
    after entries already counted in an environment.

    >>> git_config_env([("core.hooksPath", "/dev/null")])
    {'GIT_CONFIG_KEY_0': 'core.hooksPath', 'GIT_CONFIG_VALUE_0': '/dev/null', 'GIT_CONFIG_COUNT': '1'}
    """
    env: dict[str, str] = {}
    for i, (key, value) in enumerate(pairs, start):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    env["GIT_CONFIG_COUNT"] = str(start + len(pairs))
    return env


def last_lines(text: str, n: int = 6) -> str:
    """The last `n` non-empty lines of `text`, joined with ' | ' (for one-line errors)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-n:])


def staged_cwd(staged: Staged) -> tuple[int, str]:
    """A directory fd of the staging directory (the caller closes it; pass it in pass_fds) and a cwd for
    a child process that names it (fd_cwd), or the staging path where /proc is missing."""
    fd = staged.open_fd()
    return fd, fd_cwd(fd) or str(staged.path)


def fd_cwd(fd: int) -> str:
    """A cwd for a child process that names the directory behind `fd` (must be in pass_fds).

    The child resolves /proc/self/fd/N in its own fd table after fork, so the directory it enters is
    the one we resolved safely, whatever happens to the path meanwhile.
    """
    return f"/proc/self/fd/{fd}" if os.path.isdir("/proc/self/fd") else ""
