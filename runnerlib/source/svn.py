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
    fd_cwd,
    find_program,
    last_lines,
    refuse_cleartext_credentials,
    register_strategy,
    run_tool,
    strip_credentials,
    url_credentials,
)

_REVISION = re.compile(r"^(?:\d+|HEAD|BASE|COMMITTED|PREV|\{[0-9T:.\-+Z ]+\})$")


@register_strategy("svn")
def prepare(spec: SourceSpec, staged: Staged, ctx: PrepareContext) -> PreparedSource:
    """Check out spec.url at revision spec.ref (default HEAD) into the staging directory."""
    assert spec.url is not None
    field = f"{spec.field_prefix}_url"
    ref_field = f"{spec.field_prefix}_ref"
    if spec.url.startswith("-"):
        raise SourceError(f"{field}: must not start with '-'")
    refuse_cleartext_credentials(spec, ctx)
    rev = (spec.ref or "HEAD").lstrip("r") if (spec.ref or "").lstrip("r").isdigit() else (spec.ref or "HEAD")
    if not _REVISION.match(rev):
        raise SourceError(f"{ref_field}: not a Subversion revision (a number, HEAD, or {{DATE}}): {spec.ref!r}")
    svn = find_program("svn", "subversion", ctx)
    clean = strip_credentials(spec.url)
    shown = ctx.registry.mask_text(clean)
    user, password = url_credentials(spec.url)
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
        fd = staged.open_fd()
        try:
            cwd = fd_cwd(fd) or str(staged.path)
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
