"""What a copy of a git work tree holds: the files git knows of, as `git ls-files -z -co --exclude-standard` lists
them (tracked, and untracked ones that are not ignored: no .venv, no node_modules, no build output, no .git).

A `copy` source of a directory inside a git work tree copies these (source/copy.py); any other directory is
copied whole. The work tree is found the way git finds it (a `.git` directory or gitdir file in the directory
or above, not across a mount point), without running git, so the first lines of a job can say which it is.

git runs as on a hostile repository (the directory may be anyone's): every setting that makes git run a program
is pinned off on the command line (source/gitinfo.py's PINS: fsmonitor, hooks, ...), no system config is read,
discovery stops above the work tree, no optional locks, and safe.directory is granted for that one work tree
only (the pins are what makes reading a repository another uid owns harmless). Nothing git prints is shown
but a failure's last line, masked by the caller.

Example::

    top = work_tree_of("/home/you/project")        # "/home/you/project", or None
    listing = git_files("/home/you/project", top)   # GitFiles; listing.includes(("src", "app.py"))
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field

from runnerlib.source.base import SourceError, git_config_env, last_lines
from runnerlib.source.gitinfo import PINS

__all__ = ["GitFiles", "git_files", "work_tree_of"]


def work_tree_of(directory: str) -> str | None:
    """The top of the git work tree holding `directory` (itself or a parent, not across a mount point), or None.
    A directory inside `.git` is in no work tree."""
    here = os.path.realpath(directory)
    while True:
        if os.path.basename(here) == ".git":
            return None
        if os.path.lexists(os.path.join(here, ".git")):
            return here
        parent = os.path.dirname(here)
        if parent == here or os.path.ismount(here):
            return None
        here = parent


@dataclass
class GitFiles:
    """The paths git lists under one directory (relative to it), and the directories that lead to them."""

    top: str
    files: set[str] = field(default_factory=set)
    # Listed directories: submodules and untracked nested repositories, copied whole but for their .git.
    trees: set[str] = field(default_factory=set)
    parents: set[str] = field(default_factory=set)

    def includes(self, parts: tuple[str, ...]) -> bool:
        """Whether the entry at `parts` (path components under the directory) is copied."""
        rel = "/".join(parts)
        if rel in self.files or rel in self.parents or rel in self.trees:
            return True
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in self.trees:
                return ".git" not in parts[i:]
        return False


def git_files(directory: str, top: str, *, environ: Mapping[str, str] | None = None,
              timeout: float | None = 300) -> GitFiles:
    """The files git knows of under `directory`, in the work tree `top` (work_tree_of). Raises SourceError
    (git missing, or git failing: a broken .git) rather than copying what git would leave out."""
    program = shutil.which("git", path=(environ or os.environ).get("PATH"))
    if program is None:
        raise SourceError(f"{directory} is in the git work tree {top}, whose files are listed by git, which is not "
                          "installed: install git, or copy a directory that is not a git work tree")
    base = dict(os.environ if environ is None else environ)
    env = {k: v for k, v in base.items() if not k.startswith("GIT_") or k == "GIT_CONFIG_GLOBAL"}
    env.update(git_config_env([*PINS, ("safe.directory", top)]))
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CEILING_DIRECTORIES=os.path.dirname(top), GIT_TERMINAL_PROMPT="0",
               GIT_OPTIONAL_LOCKS="0", LC_ALL="C")
    try:
        proc = subprocess.run([program, "--no-pager", "-C", directory, "ls-files", "-z", "--cached", "--others",
                               "--exclude-standard"], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise SourceError(f"git ls-files timed out after {timeout} s in {directory}") from None
    if proc.returncode != 0:
        detail = last_lines(proc.stderr.decode("utf-8", "replace")) or f"exit status {proc.returncode}"
        raise SourceError(f"git ls-files failed in {directory}: {detail}")
    listing = GitFiles(top)
    for raw in proc.stdout.split(b"\0"):
        if not raw:
            continue
        rel = os.fsdecode(raw)
        if rel.endswith("/"):  # an untracked nested repository
            rel = rel.rstrip("/")
            listing.trees.add(rel)
        elif os.path.isdir(os.path.join(directory, rel)) and not os.path.islink(os.path.join(directory, rel)):
            listing.trees.add(rel)  # a submodule (a gitlink in the index)
        else:
            listing.files.add(rel)
        parts = rel.split("/")
        listing.parents.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return listing
