"""Source type `svn`: a Subversion checkout through the `svn` program (URL + revision).

svn runs non-interactively with a private, empty configuration directory (no user config, no cached
credentials written), externals ignored unless submodules are requested, and a password from the URL
passed on stdin (--password-from-stdin), never on argv.
"""

from __future__ import annotations

import os
import re
import tempfile

from runnerlib.security.paths import Staged
from runnerlib.source.base import (
    PrepareContext,
    PreparedSource,
    SourceError,
    SourceSpec,
    check_vcs_url,
    find_program,
    last_lines,
    run_tool,
    staged_cwd,
    strip_credentials,
    url_credentials,
)

_REVISION = re.compile(r"^(?:\d+|HEAD|BASE|COMMITTED|PREV|\{[0-9T:.\-+Z ]+\})$")


def prepare(spec: SourceSpec, staged: Staged, ctx: PrepareContext) -> PreparedSource:
    """Check out spec.url at revision spec.ref (default HEAD) into the staging directory."""
    url, field, ref_field = check_vcs_url(spec, ctx)
    rev = (spec.ref or "HEAD").lstrip("r") if (spec.ref or "").lstrip("r").isdigit() else (spec.ref or "HEAD")
    if not _REVISION.match(rev):
        raise SourceError(f"{ref_field}: not a Subversion revision (a number, HEAD, or {{DATE}}): {spec.ref!r}")
    svn = find_program("svn", "subversion", ctx)
    clean = strip_credentials(url)
    shown = ctx.registry.mask_text(clean)
    user, password = url_credentials(url)
    env = {k: v for k, v in ctx.env.items() if not k.startswith("SVN_")}
    env["LC_ALL"] = "C"
    with tempfile.TemporaryDirectory(prefix="runnerlib-svn-") as config_dir:
        args = ["--non-interactive", "--no-auth-cache", "--config-dir", config_dir]
        stdin = None
        if user:
            args += ["--username", user]
        if password is not None:
            args += ["--password-from-stdin"]
            stdin = password + "\n"
        fd, cwd = staged_cwd(staged)
        try:
            externals = [] if spec.submodules else ["--ignore-externals"]
            ctx.say(f"svn: checking out {shown} revision {rev}")
            result = run_tool([svn, "checkout", "-q", *args, *externals, "-r", rev, "--", f"{clean}@{rev}", "."],
                              ctx, env=env, cwd=cwd, input_text=stdin, pass_fds=(fd,))
            if result.returncode != 0:
                detail = last_lines(result.stderr) or f"exit status {result.returncode}"
                if "E160006" in detail or "No such revision" in detail or "E195012" in detail:
                    raise ctx.fail(f"{ref_field}: revision {rev!r} not found in {shown}: {detail}")
                raise ctx.fail(f"{field}: svn checkout failed for {shown}: {detail}")
            info = run_tool([svn, "info", "--show-item", "revision", *args[:4], "."], ctx, env=env, cwd=cwd,
                            pass_fds=(fd,))
            revision = info.stdout.strip() or None
        finally:
            os.close(fd)
    ctx.say(f"svn: checked out revision {revision}")
    return PreparedSource(type="svn", path=ctx.workspace.path(staged.dest), revision=revision,
                          details={"ref": rev, "url": shown})
