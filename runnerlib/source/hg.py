"""Source type `hg`: a Mercurial checkout through the `hg` program (URL + revision).

hg runs with HGPLAIN=1 and HGRCPATH pointing at nothing but our own settings, so no user or system
hgrc can add hooks or extensions; a clone never transfers the remote's .hg/hgrc. Credentials in the
URL are registered as secrets and handed to hg through the [auth] section of that private hgrc: never on
argv, never in the checkout's .hg/hgrc. runnerlib runs hg only here, before any step: a repository's own
.hg/hgrc (which hg always reads, whatever HGRCPATH says) is the fresh clone's; a trusted `hg` in a later step
works on the pristine tree, which untrusted steps never change (runnerlib.source.pristine).
"""

from __future__ import annotations

import os
import re
import tempfile

from runnerlib.security.paths import Staged
from runnerlib.source.base import (
    PrepareContext,
    PreparedSource,
    SourceSpec,
    check_vcs_url,
    find_program,
    last_lines,
    run_tool,
    staged_cwd,
    strip_credentials,
    url_credentials,
)

_HGRC = """[ui]
interactive = false
[extensions]
[hooks]
"""


def _hg_env(ctx: PrepareContext, hgrc: str) -> dict[str, str]:
    env = {k: v for k, v in ctx.env.items() if not k.startswith("HG")}
    env["HGPLAIN"] = "1"
    env["HGRCPATH"] = hgrc
    env["HGENCODING"] = "utf-8"
    return env


def prepare(spec: SourceSpec, staged: Staged, ctx: PrepareContext) -> PreparedSource:
    """Clone spec.url at spec.ref (default: the tip of the default branch) into the staging directory."""
    url, field, ref_field = check_vcs_url(spec, ctx)
    hg = find_program("hg", "mercurial", ctx)
    shown = ctx.registry.mask_text(strip_credentials(url))
    with tempfile.TemporaryDirectory(prefix="runnerlib-hgrc-") as tmp:
        hgrc = os.path.join(tmp, "hgrc")
        clean = strip_credentials(url)
        user, password = url_credentials(url)
        # Credentials go in our private hgrc's [auth] section (0600, in a private temp dir), not on argv.
        fd_rc = os.open(hgrc, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd_rc, "w", encoding="utf-8") as rc:
            rc.write(_HGRC)
            if user is not None and clean.split(":", 1)[0] in ("http", "https"):
                prefix = clean.split("?", 1)[0]
                rc.write(f"[auth]\nrunnerlib.prefix = {prefix}\nrunnerlib.username = {user}\n")
                if password is not None:
                    rc.write(f"runnerlib.password = {password}\n")
        env = _hg_env(ctx, hgrc)
        fd, cwd = staged_cwd(staged)
        try:

            def run(*args: str, what: str):
                result = run_tool([hg, *args], ctx, env=env, cwd=cwd, pass_fds=(fd,))
                if result.returncode != 0:
                    detail = last_lines(result.stderr + "\n" + result.stdout) or f"exit status {result.returncode}"
                    if "unknown revision" in detail or "not found" in detail and spec.ref:
                        raise ctx.fail(f"{ref_field}: revision {spec.ref or 'default'!r} not found in {shown}: {detail}")
                    raise ctx.fail(f"{field}: {what} failed for {shown}: {detail}")
                return result

            ctx.say(f"hg: cloning {shown} revision {spec.ref or '(tip of default)'}")
            rev = spec.ref or "default"
            out = run("identify", "--debug", "-i", "-r", rev, "--", clean, what="hg identify").stdout
            # --debug adds chatter ("using http://...", "sending ... command"); the node is a 40-hex word.
            nodes = [w for w in out.split() if re.fullmatch(r"[0-9a-f]{40}", w)]
            node = nodes[-1] if nodes else ""
            if not node:
                raise ctx.fail(f"{ref_field}: revision {rev!r} not found in {shown}")
            pull_limit = [] if spec.full_history else ["-r", node]
            run("clone", "-q", "-U", *pull_limit, "--", clean, ".", what="hg clone")
            run("update", "-q", "-r", node, what=f"hg update {rev}")
            # The clone stored the URL (already without credentials) as the default path; make sure of it.
            with ctx.workspace.open_file(f"{staged.rel}/.hg/hgrc", "w") as repo_rc:
                repo_rc.write(f"[paths]\ndefault = {clean}\n")
        finally:
            os.close(fd)
    ctx.say(f"hg: checked out {node}")
    return PreparedSource(type="hg", path=ctx.workspace.path(staged.dest), revision=node,
                          details={"ref": rev, "url": shown})
