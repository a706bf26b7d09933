"""Source type `hg`: a Mercurial checkout through the `hg` program (URL + revision).

hg runs with HGPLAIN=1 and HGRCPATH pointing at nothing but our own settings, so no user or system
hgrc can add hooks or extensions; a clone never transfers the remote's .hg/hgrc. Credentials in the
URL are registered as secrets and removed from the stored default path (.hg/hgrc) after the clone.
"""

from __future__ import annotations

import os
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
    register_strategy,
    run_tool,
    strip_credentials,
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


@register_strategy("hg")
def prepare(spec: SourceSpec, staged: Staged, ctx: PrepareContext) -> PreparedSource:
    """Clone spec.url at spec.ref (default: the tip of the default branch) into the staging directory."""
    assert spec.url is not None
    field = f"{spec.field_prefix}_url"
    ref_field = f"{spec.field_prefix}_ref"
    if spec.url.startswith("-"):
        raise SourceError(f"{field}: must not start with '-'")
    hg = find_program("hg", "mercurial", ctx)
    shown = ctx.registry.mask_text(strip_credentials(spec.url))
    with tempfile.TemporaryDirectory(prefix="runnerlib-hgrc-") as tmp:
        hgrc = os.path.join(tmp, "hgrc")
        with open(hgrc, "w", encoding="utf-8") as fh:
            fh.write(_HGRC)
        env = _hg_env(ctx, hgrc)
        fd = staged.open_fd()
        try:
            cwd = fd_cwd(fd) or str(staged.path)

            def run(*args: str, what: str):
                result = run_tool([hg, *args], ctx, env=env, cwd=cwd, pass_fds=(fd,))
                if result.returncode != 0:
                    detail = last_lines(result.stderr + "\n" + result.stdout) or f"exit status {result.returncode}"
                    if "unknown revision" in detail or "not found" in detail and spec.ref:
                        raise ctx.fail(f"{ref_field}: revision {spec.ref!r} not found in {shown}: {detail}")
                    raise ctx.fail(f"{field}: {what} failed for {shown}: {detail}")
                return result

            ctx.say(f"hg: cloning {shown} revision {spec.ref or '(tip of default)'}")
            rev = spec.ref or "default"
            node = run("identify", "--debug", "-i", "-r", rev, "--", spec.url, what="hg identify").stdout.strip()
            node = node.split()[0] if node else ""
            if not node:
                raise ctx.fail(f"{ref_field}: revision {rev!r} not found in {shown}")
            pull_limit = [] if spec.full_history else ["-r", node]
            run("clone", "-q", "-U", *pull_limit, "--", spec.url, ".", what="hg clone")
            run("update", "-q", "-r", node, what=f"hg update {rev}")
            # The clone stored the URL as the default path; keep it without credentials.
            safe = strip_credentials(spec.url)
            with ctx.workspace.open_file(f"{staged.rel}/.hg/hgrc", "w") as fh:
                fh.write(f"[paths]\ndefault = {safe}\n")
        finally:
            os.close(fd)
    ctx.say(f"hg: checked out {node}")
    return PreparedSource(type="hg", path=ctx.workspace.path(staged.dest), revision=node,
                          details={"ref": rev, "url": shown})
