"""`runnerlib mask`: a stdin-to-stdout filter that masks secrets, streaming (`tail -f log | runnerlib mask`)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from runnerlib.cli.app import main
from runnerlib.security.known_formats import MaskedThenKnown, NoticeOnce
from runnerlib.security.masker import MaskingFailed
from runnerlib.security.registry import SecretRegistry
from runnerlib.security.secret_sources import SecretsDocumentError, load_secrets
from runnerlib.security.stream import pump, write_all


@main.command("mask")
@click.option("--secret-env", "secret_env", multiple=True, metavar="NAME",
              help="Mask the value of this environment variable (repeatable).")
@click.option("--secrets-file", type=click.Path(dir_okay=False), default=None,
              help="Mask every value in this file (JSON, YAML or KEY=VALUE; see docs/secrets.md).")
@click.option("--min-length", type=click.IntRange(min=1), default=4, show_default=True,
              help="Refuse (with a warning) secrets shorter than this.")
@click.option("--replacement", default="***", show_default=True, help="What each masked run becomes.")
@click.option("--idle-flush", type=click.FloatRange(min=0, min_open=True), default=0.2, show_default=True,
              help="Seconds without input after which bytes held back (a possible secret start) are shown.")
@click.option("--no-known-formats", "no_known_formats", is_flag=True,
              help="Do not mask well-known credential formats nobody registered (GitHub/GitLab/Slack/Stripe "
                   "tokens, AWS key ids, PEM private keys, Authorization headers, signed-URL parameters).")
def mask(secret_env: tuple[str, ...], secrets_file: str | None, min_length: int, replacement: str,
         idle_flush: float, no_known_formats: bool) -> None:
    """Copy stdin to stdout with every secret masked, as it arrives.

    Masks the variables named by --secret-env, the values in --secrets-file, and every environment variable
    whose name matches the default secret-name patterns (*_TOKEN, *_SECRET, *_PASSWORD, *_PRIVATE_KEY,
    *_API_KEY, *_ACCESS_KEY, *_SECRET_KEY, *_SSH_KEY, *_CONNECTION_STRING ...), each also in its encoded
    forms (base64, URL, JSON, shell quoting), and well-known credential formats (a notice naming the format
    goes to stderr; --no-known-formats turns this off). Output is never buffered beyond a possible secret's
    start.
    """
    if not replacement:
        raise click.BadParameter("must not be empty", param_hint="--replacement")
    _warnings_to_stderr()
    registry = SecretRegistry(min_length=min_length, replacement=replacement)
    missing = [n for n in secret_env if n not in os.environ]
    if missing:
        click.echo(f"runnerlib mask: warning: --secret-env names unset variable(s): {', '.join(missing)}",
                   err=True)
    try:
        # The forms and one compilation with the main engine, in a thread while the input is awaited; the first
        # write waits for them: full speed from the first byte, and no wait at all for an empty input.
        with registry.batch(background=True):
            load_secrets(registry, environ=os.environ, secret_env_names=list(secret_env),
                         secrets_file=secrets_file)
    except SecretsDocumentError as exc:
        raise click.ClickException(str(exc)) from None
    stdin_fd, stdout_fd = sys.stdin.fileno(), sys.stdout.fileno()
    sys.stdout.flush()
    try:
        # pump takes either: write, held, flush_idle, close.
        stream: Any = registry.stream(write_all(stdout_fd)) if no_known_formats else MaskedThenKnown(
            registry, write_all(stdout_fd), replacement=replacement,
            notice=NoticeOnce(lambda line: click.echo(f"runnerlib mask: {line}", err=True)))
        # Up to 1 MiB a read: a file or a full pipe goes through in fewer, larger writes (each write costs a
        # fixed few microseconds of Python); os.read still returns at once what a slow writer has written.
        pump(stdin_fd, stream, idle_flush=idle_flush, read_size=1 << 20)
    except MaskingFailed as exc:
        raise click.ClickException(str(exc)) from None
    except BrokenPipeError:
        # The reader went away (`runnerlib mask < log | head`): like cat, stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), stdout_fd)
    except KeyboardInterrupt:
        sys.exit(130)


def _warnings_to_stderr() -> None:
    # Refusals name the source (never the value); a filter user must see them.
    logger = logging.getLogger("runnerlib.secrets")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("runnerlib mask: %(levelname)s: %(message)s"))
        handler.setLevel(logging.WARNING)
        logger.addHandler(handler)
