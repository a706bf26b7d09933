"""Source type `git`: URL + ref (branch, tag, full or short SHA, refs/pull/N/head), shallow by default.

Nothing from the fetched repository is executed: git runs in a repository we just created with no
template (no hooks), with core.hooksPath=/dev/null and core.fsmonitor=false pinned, every configured
filter driver neutralised before checkout, protocol.ext never allowed, and file:// submodules allowed
only when the superproject itself is local. Git never prompts (GIT_TERMINAL_PROMPT=0, no askpass).

Credentials: GIT_CONFIG_GLOBAL and REACTORCIDE_VCS_AUTH_DIR (gitconfig + credentials written by the
worker) are honoured; credentials in the URL are registered as secrets, removed from the URL that git
sees and stores, and handed to git through a credential helper that reads them from its environment
(never argv, never .git/config). Every line git prints passes through the registry's mask.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from runnerlib.security.paths import Staged
from runnerlib.source.base import (
    PrepareContext,
    PreparedSource,
    SourceError,
    SourceSpec,
    check_vcs_url,
    find_program,
    git_config_env,
    is_local_url,
    last_lines,
    register_url_credentials,
    run_tool,
    staged_cwd,
    strip_credentials,
    url_credentials,
)

FULL_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
SHORT_SHA = re.compile(r"^[0-9a-f]{4,39}$")
PULL_REF = re.compile(r"^(?:refs/)?pull/(\d+)/(head|merge)$")
_BAD_REF = re.compile(r"[\s~^:?*\[\\]|@\{|//|/\.|\.lock$|^/|/$")

# Environment kept from the caller; every other GIT_* variable could redirect git (GIT_DIR,
# GIT_WORK_TREE, GIT_EXEC_PATH, GIT_CONFIG_PARAMETERS ...) and is dropped.
_KEEP_GIT_ENV = frozenset({
    "GIT_CONFIG_GLOBAL", "GIT_SSH_COMMAND", "GIT_SSH", "GIT_SSL_CAINFO", "GIT_SSL_CAPATH",
    "GIT_HTTP_LOW_SPEED_LIMIT", "GIT_HTTP_LOW_SPEED_TIME", "GIT_TRACE", "GIT_CURL_VERBOSE",
})
_DROP_ENV = frozenset({"GIT_ASKPASS", "SSH_ASKPASS", "SSH_ASKPASS_REQUIRE"})

# The helper answers `get` from two variables of its own environment; nothing reaches argv or disk.
# It answers only for the exact protocol and host:port of the configured URL: after a redirect to another
# host, git asks again for that host, and must get nothing.
_CRED_HELPER = ('!f() { test "$1" = get || exit 0; p=; h=; '
                'while IFS= read -r l; do case "$l" in protocol=*) p="${l#protocol=}";; host=*) h="${l#host=}";; '
                'esac; done; '
                'test "$p" = "$RUNNERLIB_GIT_PROTOCOL" && test "$h" = "$RUNNERLIB_GIT_HOST" || exit 0; '
                "printf 'username=%s\\npassword=%s\\n' \"$RUNNERLIB_GIT_USERNAME\" \"$RUNNERLIB_GIT_PASSWORD\"; }; f")


@dataclass
class ResolvedRef:
    """What a ref turned out to be on the remote."""

    kind: str  # branch, tag, ref, sha, short
    name: str  # the full ref name, or the SHA as given
    sha: str | None = None  # remote object id when known (peeled for annotated tags)


def pinned_config(*, allow_file_protocol: bool) -> list[tuple[str, str]]:
    """Configuration forced on every git command (command-line/env config beats every config file)."""
    return [
        ("core.hooksPath", "/dev/null"),
        ("core.fsmonitor", "false"),
        ("core.askPass", ""),
        ("credential.interactive", "false"),
        ("protocol.ext.allow", "never"),
        ("protocol.file.allow", "always" if allow_file_protocol else "never"),
        ("submodule.recurse", "false"),
        ("fetch.recurseSubmodules", "false"),
        ("init.templateDir", ""),
        # Check every fetched object (malformed trees, .gitmodules path tricks) before it is written.
        ("fetch.fsckObjects", "true"),
        ("advice.detachedHead", "false"),
        ("gc.auto", "0"),
        ("maintenance.auto", "false"),
    ]


def git_env(ctx: PrepareContext, *, url: str, config: list[tuple[str, str]]) -> dict[str, str]:
    """The environment for git: scrubbed GIT_*, no prompts, pinned config, URL credentials via helper."""
    env = {k: v for k, v in ctx.env.items()
           if (not k.startswith("GIT_") or k in _KEEP_GIT_ENV) and k not in _DROP_ENV}
    env["GIT_TERMINAL_PROMPT"] = "0"
    auth_dir = ctx.env.get("REACTORCIDE_VCS_AUTH_DIR")
    if auth_dir and "GIT_CONFIG_GLOBAL" not in env and os.path.isfile(os.path.join(auth_dir, "gitconfig")):
        env["GIT_CONFIG_GLOBAL"] = os.path.join(auth_dir, "gitconfig")
    pairs = list(config)
    user, password = url_credentials(url)
    if user is not None and url.split(":", 1)[0] in ("http", "https"):
        parts = urllib.parse.urlsplit(url)
        env["RUNNERLIB_GIT_PROTOCOL"] = parts.scheme
        env["RUNNERLIB_GIT_HOST"] = parts.netloc.rpartition("@")[2]
        env["RUNNERLIB_GIT_USERNAME"] = user
        env["RUNNERLIB_GIT_PASSWORD"] = password or ""
        pairs.append(("credential.helper", _CRED_HELPER))
    env.update(git_config_env(pairs))
    return env


_EXTRA_HEADER = re.compile(r"^\s*extraheader\s*=\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)


def register_vcs_auth(ctx: PrepareContext) -> int:
    """Register the credentials the worker put in $REACTORCIDE_VCS_AUTH_DIR.

    `credentials` holds git-credential-store lines (https://user:token@host/path); `gitconfig` may carry
    an `http.extraHeader = Authorization: ...` line. Returns how many values were registered.
    """
    auth_dir = ctx.env.get("REACTORCIDE_VCS_AUTH_DIR")
    if not auth_dir:
        return 0
    count = 0
    try:
        with open(os.path.join(auth_dir, "credentials"), encoding="utf-8", errors="replace") as fh:
            for line in fh.read().splitlines():
                if line.strip():
                    count += len(register_url_credentials(line.strip(), ctx.registry,
                                                          source="REACTORCIDE_VCS_AUTH_DIR credentials"))
    except OSError:
        pass
    try:
        with open(os.path.join(auth_dir, "gitconfig"), encoding="utf-8", errors="replace") as fh:
            config = fh.read()
    except OSError:
        return count
    for header in _EXTRA_HEADER.findall(config):
        value = header.partition(":")[2].strip() or header
        scheme, _, token = value.partition(" ")
        for secret in {value, token.strip()} if token else {value}:
            if ctx.registry.add(secret, source="REACTORCIDE_VCS_AUTH_DIR extraHeader"):
                count += 1
    return count


class Git:
    """Runs git in one staging repository with the pinned environment; output always masked."""

    def __init__(self, ctx: PrepareContext, staged: Staged, *, url: str, field: str) -> None:
        self.ctx = ctx
        self.field = field
        self.program = find_program("git", "git", ctx)
        self._given_url = url  # kept only to hand its credentials to the helper's environment
        self.url = strip_credentials(url)
        self.shown_url = ctx.registry.mask_text(self.url)
        self.config = pinned_config(allow_file_protocol=is_local_url(url))
        self.env = git_env(ctx, url=url, config=self.config)
        self.fd, self.cwd = staged_cwd(staged)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def run(self, *args: str, check: bool = True, what: str | None = None, env: Mapping[str, str] | None = None):
        """Run `git args...`; on failure (check) raise SourceError with git's masked last lines."""
        result = run_tool([self.program, *args], self.ctx, env=env or self.env, cwd=self.cwd, pass_fds=(self.fd,))
        if check and result.returncode != 0:
            detail = last_lines(result.stderr) or f"exit status {result.returncode}"
            raise self.ctx.fail(f"{self.field}: {what or 'git ' + args[0]} failed for {self.shown_url}: {detail}")
        return result

    def add_config(self, pairs: list[tuple[str, str]]) -> None:
        """Pin more configuration for the commands that follow."""
        self.config = self.config + pairs
        self.env = git_env(self.ctx, url=self._given_url, config=self.config)


def resolve_ref(git: Git, ref: str | None, *, ref_field: str) -> ResolvedRef:
    """Find out what `ref` names on the remote (one ls-remote), or raise naming the ref and URL."""
    if ref is None:
        out = git.run("ls-remote", "--symref", "origin", "HEAD", what="listing the remote").stdout
        for line in out.splitlines():
            if line.startswith("ref: ") and line.endswith("\tHEAD"):
                name = line[5:-5]
                return ResolvedRef("branch", name)
        raise git.ctx.fail(f"{ref_field}: no ref given and {git.shown_url} has no default branch (HEAD)")
    if FULL_SHA.match(ref):
        return ResolvedRef("sha", ref, ref)
    pull = PULL_REF.match(ref)
    candidates = ([f"refs/pull/{pull.group(1)}/{pull.group(2)}"] if pull else
                  [ref] if ref.startswith("refs/") else [f"refs/heads/{ref}", f"refs/tags/{ref}"])
    out = git.run("ls-remote", "origin", *candidates, what="listing the remote").stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        found[name] = sha
    for name in candidates:
        if name in found:
            sha = found.get(name + "^{}", found[name])
            kind = "branch" if name.startswith("refs/heads/") else "tag" if name.startswith("refs/tags/") else "ref"
            return ResolvedRef(kind, name, sha)
    if SHORT_SHA.match(ref):
        return ResolvedRef("short", ref)
    raise git.ctx.fail(f"{ref_field}: ref {ref!r} not found in {git.shown_url}")


def local_name(resolved: ResolvedRef) -> str:
    """Where a fetched ref is stored locally."""
    if resolved.kind == "branch":
        return "refs/remotes/origin/" + resolved.name[len("refs/heads/"):]
    if resolved.kind == "tag":
        return resolved.name
    return "refs/remotes/origin/" + resolved.name[len("refs/"):]


def prepare(spec: SourceSpec, staged: Staged, ctx: PrepareContext) -> PreparedSource:
    """Fetch and check out spec.ref of spec.url into the staging directory."""
    url, field, ref_field = check_vcs_url(spec, ctx)
    if spec.ref is not None and (_BAD_REF.search(spec.ref) or ".." in spec.ref):
        # git check-ref-format rules; ':' would also turn the ref into a refspec of our fetch.
        raise SourceError(f"{ref_field}: not a valid git ref name (no spaces, '..', ':', '~', '^', '?', '*', "
                          f"'[' or '\\'): {spec.ref!r}")
    register_vcs_auth(ctx)
    git = Git(ctx, staged, url=url, field=field)
    try:
        return _checkout(git, spec, staged, ctx, ref_field)
    finally:
        git.close()


def _checkout(git: Git, spec: SourceSpec, staged: Staged, ctx: PrepareContext, ref_field: str) -> PreparedSource:
    ctx.say(f"git: fetching {git.shown_url} ref {spec.ref or '(default branch)'} "
            f"({'full history' if spec.full_history else f'depth {spec.depth}'})")
    git.run("init", "-q", "--template=", ".", what="git init")
    git.run("remote", "add", "origin", git.url, what="git remote add")
    resolved = resolve_ref(git, spec.ref, ref_field=ref_field)
    depth = [] if spec.full_history else [f"--depth={spec.depth}"]
    fetch = ["fetch", "-q", "--no-tags", "--no-recurse-submodules", "--no-write-fetch-head"]
    everything = ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"]
    if resolved.kind in ("branch", "tag", "ref"):
        refspec = f"+{resolved.name}:{local_name(resolved)}"
        extra = everything if spec.full_history else []
        git.run(*fetch, *depth, "origin", refspec, *extra, what=f"fetching {resolved.name}")
        target = local_name(resolved)
    elif resolved.kind == "sha":
        result = git.run(*fetch, *depth, "origin", resolved.name, *(everything if spec.full_history else []),
                         check=False)
        if result.returncode != 0:
            # Servers that refuse to serve a bare SHA (uploadpack.allowReachableSHA1InWant off): fetch the
            # branches and tags and look for it there.
            git.run(*fetch, "origin", *everything, what="fetching branches and tags")
        if git.run("cat-file", "-e", f"{resolved.name}^{{commit}}", check=False).returncode != 0:
            raise ctx.fail(f"{ref_field}: commit {resolved.name} not found in {git.shown_url}")
        target = resolved.name
    else:  # short SHA: only a full fetch can tell which commit it abbreviates
        git.run(*fetch, "origin", *everything, what="fetching branches and tags")
        found = git.run("rev-parse", "--verify", "-q", f"{resolved.name}^{{commit}}", check=False)
        if found.returncode != 0:
            raise ctx.fail(f"{ref_field}: ref {resolved.name!r} not found in {git.shown_url} "
                           "(not a branch, tag, or unambiguous commit prefix)")
        target = found.stdout.strip()
    _neutralise_filters(git)
    if resolved.kind == "branch":
        branch = resolved.name[len("refs/heads/"):]
        git.run("checkout", "-q", "-B", branch, target, what=f"checking out {branch}")
    else:
        git.run("checkout", "-q", "--detach", target, what=f"checking out {spec.ref}")
    if spec.submodules:
        _submodules(git, spec, ctx)
    sha = git.run("rev-parse", "HEAD", what="git rev-parse").stdout.strip()
    ctx.say(f"git: checked out {sha} ({resolved.name})")
    return PreparedSource(type="git", path=ctx.workspace.path(staged.dest), revision=sha,
                          details={"ref": resolved.name, "kind": resolved.kind, "url": git.shown_url})


def _neutralise_filters(git: Git) -> None:
    """Disable every filter driver configured anywhere, so .gitattributes in the checkout runs nothing."""
    out = git.run("config", "--get-regexp", r"^filter\..*\.(smudge|clean|process|required)$", check=False).stdout
    drivers = sorted({line.split(" ", 1)[0].rsplit(".", 1)[0][len("filter."):] for line in out.splitlines() if line})
    pairs: list[tuple[str, str]] = []
    for name in drivers:
        pairs += [(f"filter.{name}.smudge", ""), (f"filter.{name}.clean", ""), (f"filter.{name}.process", ""),
                  (f"filter.{name}.required", "false")]
    if pairs:
        git.add_config(pairs)


def _submodules(git: Git, spec: SourceSpec, ctx: PrepareContext) -> None:
    listed = git.run("config", "-f", ".gitmodules", "--get-regexp", r"^submodule\..*\.url$", check=False).stdout
    for line in listed.splitlines():
        _, _, sub_url = line.partition(" ")
        if sub_url:
            register_url_credentials(sub_url, ctx.registry, source=f"{spec.field_prefix} submodule url")
    depth = [] if spec.full_history else [f"--depth={spec.depth}"]
    git.run("submodule", "update", "--init", "--recursive", *depth, what="fetching submodules")
