"""Read-only questions about a checked-out git repository: files changed between refs, and its state.

runnerlib's own git calls work on the pristine tree (/job/src, which no untrusted step can change: see
runnerlib.source.pristine), and are still run as if the repository were hostile:
- every setting that makes git run a program is pinned off on the command line (PINS: fsmonitor, hooks, pager,
  external diff, textconv, filters, credential helpers, ssh and proxy commands, signature programs, editors),
  and no system config is read (GIT_CONFIG_NOSYSTEM);
- the untrusted steps' copy of the tree is refused (runnerlib.source.commands): it is theirs to change;
- .git is read through the strict path layer first: it must be a directory, and no symlink in it may lead out
  of the repository (git would follow a symlinked packed-refs and print a line of the file it points at in
  its parse error), nor may objects/info/alternates or commondir point git at another directory;
- no optional locks, discovery stopped above the repository, and every line of output passes through the
  registry's mask when one is given.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path

from runnerlib.security.paths import PathPolicyError, Workspace
from runnerlib.source.base import SecretSink, SourceError, git_config_env, last_lines, strip_credentials

# Every setting that makes git run a program, pinned off (command-line config beats every config file). An empty
# value resets a multi-valued list (credential.helper). Filter and diff drivers are per name: they are
# neutralised by name in _driver_pins, from what the repository's own config declares.
PINS: list[tuple[str, str]] = [
    ("core.hooksPath", "/dev/null"), ("core.fsmonitor", "false"), ("core.pager", "cat"),
    ("core.editor", "false"), ("sequence.editor", "false"), ("core.sshCommand", "false"),
    ("core.gitProxy", ""), ("core.askPass", ""), ("credential.helper", ""), ("credential.interactive", "false"),
    ("log.showSignature", "false"), ("gpg.program", "false"), ("gpg.ssh.program", "false"),
    ("gpg.x509.program", "false"), ("gpg.openpgp.program", "false"), ("gpg.ssh.defaultKeyCommand", "false"),
    ("diff.external", ""), ("diff.trustExitCode", "false"), ("merge.tool", ""), ("diff.tool", ""),
    ("protocol.ext.allow", "never"), ("protocol.file.allow", "never"), ("submodule.recurse", "false"),
    ("fetch.recurseSubmodules", "false"), ("core.untrackedCache", "false"), ("gc.auto", "0"),
    ("maintenance.auto", "false"), ("uploadpack.packObjectsHook", ""), ("core.alternateRefsCommand", ""),
]


def _driver_pins(repo: Path, env: Mapping[str, str], program: str) -> list[tuple[str, str]]:
    """filter.<name>.* and diff.<name>.{command,textconv} reset for every driver the configuration names."""
    proc = subprocess.run([program, "config", "--get-regexp", r"^(filter|diff)\..*\.(smudge|clean|process|command|"
                           r"textconv)$"], env={**env, "GIT_DIR": str(repo / ".git")}, stdin=subprocess.DEVNULL,
                          capture_output=True, check=False)
    pins: list[tuple[str, str]] = []
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        key = line.split(" ", 1)[0]
        if key.count(".") >= 2:
            pins.append((key, ""))
    return pins


def check_git_dir(repo: Path) -> None:
    """Refuse a .git that is not a plain directory of this repository (read through the strict path layer)."""
    try:
        git_dir = os.lstat(repo / ".git")
    except OSError:
        raise SourceError(f"code_dir: not a git repository: {repo}") from None
    if not stat.S_ISDIR(git_dir.st_mode):
        # A symlink or a "gitdir:" file planted by a step could point git at another repository on the
        # runner's disk and have its history printed here.
        raise SourceError(f"code_dir: {repo}/.git must be a directory, not a symlink or gitdir file")
    try:
        with Workspace(repo) as ws:
            leaving = ws.links_leaving(".git")
            redirects = [name for name in ("objects/info/alternates", "commondir") if ws.exists(f".git/{name}")]
    except (OSError, PathPolicyError) as exc:
        raise SourceError(f"code_dir: {repo}/.git cannot be read safely: {exc}") from None
    if leaving:
        raise SourceError(f"code_dir: {repo}/.git holds symlinks leading out of the repository "
                          f"({', '.join(leaving[:3])}): git would read what they point at; refused")
    if redirects:
        raise SourceError(f"code_dir: {repo}/.git/{redirects[0]} points git at another directory; refused")


def _env(repo: Path, environ: Mapping[str, str] | None) -> dict[str, str]:
    base = dict(os.environ if environ is None else environ)
    env = {k: v for k, v in base.items() if not k.startswith("GIT_") or k == "GIT_CONFIG_GLOBAL"}
    # safe.directory: the pins above are what makes reading a repository another uid owns harmless here.
    env.update(git_config_env([*PINS, ("safe.directory", str(repo))]))
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    env["GIT_CEILING_DIRECTORIES"] = str(repo.parent)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_OPTIONAL_LOCKS"] = "0"
    env["LC_ALL"] = "C"
    return env


def _git(repo: Path, args: list[str], *, registry: SecretSink | None, environ: Mapping[str, str] | None,
         check: bool = True) -> tuple[int, str]:
    program = shutil.which("git")
    if not program:
        raise SourceError("the `git` program is not installed; install the Debian package `git`")
    check_git_dir(repo)
    env = _env(repo, environ)
    drivers = _driver_pins(repo, env, program)
    if drivers:
        count = int(env["GIT_CONFIG_COUNT"])
        env.update(git_config_env(drivers, start=count))
    env["GIT_DIR"] = str(repo / ".git")
    env["GIT_WORK_TREE"] = str(repo)
    proc = subprocess.run([program, "--no-pager", "-C", str(repo), *args], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, check=False)
    out, err = proc.stdout, proc.stderr
    if registry is not None:
        out, err = registry.mask(out), registry.mask(err)
    if check and proc.returncode != 0:
        detail = last_lines(err.decode("utf-8", "replace")) or f"exit status {proc.returncode}"
        raise SourceError(f"git {args[0]} failed in {repo}: {detail}")
    return proc.returncode, out.decode("utf-8", "replace")


def files_changed(repo: str | os.PathLike[str], base: str, head: str = "HEAD", *, merge_base: bool = False,
                  registry: SecretSink | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Paths that differ between `base` and `head` (with `merge_base`, since their merge base: base...head).

    >>> files_changed("/job/src", "origin/main")          # doctest: +SKIP
    ['README.md', 'src/app.py']
    """
    for name, ref in (("base", base), ("head", head)):
        if not ref or ref.startswith("-") or "\0" in ref:
            raise SourceError(f"{name} ref: must be a non-empty ref not starting with '-' (got {ref!r})")
    repo_path = Path(repo)
    spec = [f"{base}...{head}"] if merge_base else [base, head]
    _, out = _git(repo_path, ["diff", "--name-only", "-z", "--no-ext-diff", "--no-textconv", "--no-renames",
                              *spec, "--"], registry=registry, environ=environ)
    return [p for p in out.split("\0") if p]


def repo_info(repo: str | os.PathLike[str], *, registry: SecretSink | None = None,
              environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """The state of the checkout: sha, short_sha, branch (None when detached), author, committer, date,
    subject, message, remotes (credentials removed), shallow."""
    repo_path = Path(repo)
    fmt = "%H%x00%h%x00%an%x00%ae%x00%cn%x00%ce%x00%cI%x00%s%x00%B"
    _, out = _git(repo_path, ["log", "-1", "--no-show-signature", f"--format={fmt}", "HEAD"],
                  registry=registry, environ=environ)
    fields = out.split("\0")
    if len(fields) < 9:
        raise SourceError(f"git log gave unexpected output in {repo_path}")
    rc, branch = _git(repo_path, ["symbolic-ref", "-q", "--short", "HEAD"], registry=registry, environ=environ,
                      check=False)
    _, remotes_out = _git(repo_path, ["remote", "-v"], registry=registry, environ=environ, check=False)
    remotes: dict[str, str] = {}
    for line in remotes_out.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            remotes.setdefault(parts[0], strip_credentials(parts[1]))
    _, shallow = _git(repo_path, ["rev-parse", "--is-shallow-repository"], registry=registry, environ=environ,
                      check=False)
    return {
        "sha": fields[0], "short_sha": fields[1], "branch": branch.strip() if rc == 0 else None,
        "author": f"{fields[2]} <{fields[3]}>", "committer": f"{fields[4]} <{fields[5]}>", "date": fields[6],
        "subject": fields[7], "message": fields[8].rstrip("\n"), "remotes": remotes,
        "shallow": shallow.strip() == "true",
    }
