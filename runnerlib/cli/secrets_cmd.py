"""`runnerlib store ...` (the encrypted local store) and `runnerlib secrets add` (the registration socket).

Secret values are read from stdin or a hidden prompt, never from argv: a command line is readable by every
process on the host (docs/secrets.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from runnerlib.cli.app import main
from runnerlib.security import secret_store


def _read_value(prompt: str) -> str:
    """The value to store: stdin when it is not a terminal (one trailing newline dropped), else a hidden prompt."""
    if sys.stdin is not None and not sys.stdin.isatty():
        data = sys.stdin.buffer.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise click.ClickException("the value on stdin is not valid UTF-8") from None
        text = text[:-1] if text.endswith("\n") else text
        text = text[:-1] if text.endswith("\r") else text
    else:
        text = click.prompt(prompt, hide_input=True, confirmation_prompt=True, prompt_suffix=": ")
    if not text:
        raise click.ClickException("empty value: nothing stored")
    return text


def _store(ctx: click.Context) -> secret_store.SecretStore:
    return secret_store.SecretStore(ctx.obj["store_dir"])


@main.group()
@click.option("--store", "store_dir", type=click.Path(file_okay=False, path_type=Path), envvar="REACTORCIDE_SECRETS_STORE",
              default=None, help="Store directory (default: $XDG_CONFIG_HOME/reactorcide/secrets).")
@click.pass_context
def store(ctx: click.Context, store_dir: Path | None) -> None:
    """The encrypted local secret store behind ${secret:PATH:KEY} references in job env.

    The password comes from REACTORCIDE_SECRETS_PASSWORD or a prompt on the terminal.
    """
    ctx.ensure_object(dict)
    ctx.obj["store_dir"] = store_dir or secret_store.default_store_dir()


def _errors(func):  # type: ignore[no-untyped-def]
    """Turn SecretStoreError into one clear line (exit 1)."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return func(*args, **kwargs)
        except secret_store.SecretStoreError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


@store.command("init")
@click.option("--force", is_flag=True, help="Replace an existing store (every entry is lost).")
@click.pass_context
@_errors
def store_init(ctx: click.Context, force: bool) -> None:
    """Create an empty store with a fresh salt."""
    target = secret_store.SecretStore(
        ctx.obj["store_dir"], password=lambda: secret_store.password_from_env_or_tty(confirm=True)
    )
    target.init(force=force)
    click.echo(f"initialised secret store {target.directory}", err=True)


@store.command("set")
@click.argument("path")
@click.argument("key")
@click.pass_context
@_errors
def store_set(ctx: click.Context, path: str, key: str) -> None:
    """Store the value read from stdin (or a hidden prompt) at PATH KEY."""
    secret_store.check_path(path)
    secret_store.check_key(key)
    value = _read_value(f"Value for {path}:{key}")
    _store(ctx).set(path, key, value)
    click.echo(f"stored {path}:{key}", err=True)


@store.command("get")
@click.argument("path")
@click.argument("key")
@click.pass_context
@_errors
def store_get(ctx: click.Context, path: str, key: str) -> None:
    """Print the value at PATH KEY on stdout (exit 1 if there is none)."""
    value = _store(ctx).get(path, key)
    if value is None:
        raise click.ClickException(f"no secret at {path}:{key}")
    click.echo(value)


@store.command("list")
@click.argument("path", required=False)
@click.pass_context
@_errors
def store_list(ctx: click.Context, path: str | None) -> None:
    """List the PATHs of the store, or the KEYs under PATH (never values)."""
    target = _store(ctx)
    for name in target.list_keys(path) if path else target.list_paths():
        click.echo(name)


@store.command("delete")
@click.argument("path")
@click.argument("key")
@click.pass_context
@_errors
def store_delete(ctx: click.Context, path: str, key: str) -> None:
    """Delete PATH KEY (exit 1 if there is none)."""
    if not _store(ctx).delete(path, key):
        raise click.ClickException(f"no secret at {path}:{key}")
    click.echo(f"deleted {path}:{key}", err=True)


@main.group()
def secrets() -> None:
    """Register secrets with the running job (trusted steps only)."""


@secrets.command("add")
@click.option("--multiline", is_flag=True, help="Read ONE value (e.g. a PEM key) from the whole of stdin.")
@click.option("--socket", "socket_path", default=None, metavar="PATH",
              help="Socket path (default: $REACTORCIDE_SECRETS_SOCKET). The token always comes from "
                   "$REACTORCIDE_SECRETS_TOKEN, never from the command line.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the runner.")
def secrets_add(multiline: bool, socket_path: str | None, timeout: float) -> None:
    """Register the secrets read from stdin: one per line, or the whole input with --multiline.

    On a terminal (without --multiline) the value is asked for at a hidden prompt.

    \b
    Example:
        printf '%s\\n' "$DEPLOY_TOKEN" | runnerlib secrets add
        runnerlib secrets add --multiline < deploy_key.pem
    """
    from runnerlib.secrets_client import RegistrationError, register_secrets

    if sys.stdin.isatty() and not multiline:
        # Interactive: one value at a hidden prompt, never echoed to the terminal (or its scrollback).
        text = click.prompt("Secret to register", hide_input=True, prompt_suffix=": ")
    else:
        try:
            text = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError:
            raise click.ClickException("stdin is not valid UTF-8") from None
    if multiline:
        value = text.rstrip("\r\n")
        values = [value] if value.strip() else []
    else:
        values = [line.rstrip("\r") for line in text.split("\n")]
        values = [v for v in values if v.strip()]
    if not values:
        raise click.ClickException("no secret on stdin")
    try:
        registered = register_secrets(values, socket_path=socket_path, timeout=timeout)
    except RegistrationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"registered {registered} of {len(values)} secret(s)", err=True)
    if registered < len(values):
        click.echo("some values were refused (too short to mask safely)", err=True)
