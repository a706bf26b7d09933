"""The root click group and the shared error handling of every command."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click


class RunnerlibGroup(click.Group):
    """Turns uncaught exceptions into one line on stderr (exit 2), unless --debug asks for the traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"runnerlib: error: {one_line_error(exc)}", err=True)
            sys.exit(2)


def one_line_error(exc: BaseException) -> str:
    """The message of `exc` on one line, masked by the registry of the running job if one is active."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    masker = _active_masker
    return masker(text) if masker else text


# Set by the job runner while a job is live so that error lines printed by the CLI are masked.
_active_masker: Callable[[str], str] | None = None


def set_error_masker(masker: Callable[[str], str] | None) -> None:
    global _active_masker
    _active_masker = masker


@click.group(cls=RunnerlibGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, envvar="REACTORCIDE_DEBUG", help="Show tracebacks and debug logs.")
@click.version_option(package_name="runnerlib")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """runnerlib: a security-first executor for CI/CD jobs.

    Every byte it writes is masked for every known secret; untrusted code runs in a sandbox.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug

