"""The root click group and the shared error handling of every command."""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, NoReturn

import click

from runnerlib.exit_codes import EXIT_CONFIG, EXIT_INTERRUPTED, error_text, exit_status

# The module that defines each top-level command (it registers them on `main` when imported). Only the
# invoked command's module is imported: `runnerlib run` is a job's start-up cost, and must not pay for
# cryptography, the workflow models or the sandbox probes (click's documented lazy-loading pattern).
COMMAND_MODULES = {
    "run": "run_cmd", "run-job": "run_cmd", "config": "run_cmd", "validate": "run_cmd",
    "mask": "mask_cmd",
    "store": "secrets_cmd", "secrets": "secrets_cmd",
    "checkout": "source_cmd", "copy": "source_cmd", "cleanup": "source_cmd", "git": "source_cmd",
    "audit": "sandbox_cmd", "sandbox": "sandbox_cmd",
    "workflow": "workflow_cmd", "trigger": "workflow_cmd",
}


class RunnerlibGroup(click.Group):
    """Loads a command's module when the command is looked up, and turns uncaught exceptions into one line on
    stderr (exit 78 for input errors, 1 otherwise: runnerlib.exit_codes), unless --debug asks for the
    traceback. Unknown subcommands get a "did you mean"; command-line errors exit 78 too."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            importlib.import_module(f"runnerlib.cli.{COMMAND_MODULES[cmd_name]}")
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name = args[0] if args else ""
        if args and self.get_command(ctx, name) is None and not name.startswith("-"):
            import difflib

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _usage(click.UsageError(f"no such command {name!r}{hint}", ctx))
        return super().resolve_command(ctx, args)

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise _usage(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _usage(exc) from None
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except KeyboardInterrupt:
            # Ctrl-C outside a job (a slow validate, a store command): 130 as for the jobs, no traceback.
            sys.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            # `runnerlib ... | head`: the reader left. Quiet, like the shell tools; 141 = 128 + SIGPIPE. Later
            # writes and the final flush go to /dev/null instead of failing again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            sys.exit(141)
        except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"runnerlib: error: {one_line_error(exc)}", err=True)
            sys.exit(exit_status(exc))


class _ConfigUsageError(click.UsageError):
    exit_code = EXIT_CONFIG


def _usage(exc: click.UsageError) -> click.UsageError:
    """A command-line error is a configuration error: exit 78 like the others (click's default is 2, which a
    step's own failure also returns: `make` exits 2). Same message and usage line."""
    if isinstance(exc, _ConfigUsageError):
        return exc
    return _ConfigUsageError(exc.format_message(), exc.ctx)


def one_line_error(exc: BaseException) -> str:
    """The message of `exc` on one line, masked by the registry of the running job if one is active."""
    text = error_text(exc)
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



def entry() -> NoReturn:
    """The `runnerlib` script and `python -m runnerlib.cli`: `main`, then a quick exit.

    CPython's teardown frees every object of every loaded module one by one (about 50 ms once pydantic,
    click and the masking engines are loaded), work the kernel does at once when the process ends; every
    job pays it. So, once the command is done, this does what a normal exit does that has an effect outside
    the process (join non-daemon threads, run atexit handlers such as logging's and plugins', flush the
    standard streams) and ends the process with os._exit. Only for the process entry point: `main` itself,
    as click's test runner calls it, exits normally.
    """
    try:
        main()
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, status 1, as the interpreter does
        print(code, file=sys.stderr)
        code = 1
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # noqa: SLF001 - the interpreter's own exit step, run before os._exit skips it
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be written anyway
            code = code or 1
    os._exit(code & 0xFF)
