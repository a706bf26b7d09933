"""`runnerlib store ...`: values from stdin (never argv), one clear error line, nothing half-done."""

from __future__ import annotations

import os
import subprocess

import pytest
from click.testing import CliRunner
from secrets_testlib import PYTHON, new_secret

from runnerlib.cli import main
from runnerlib.security import secret_store


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setattr(secret_store, "SCRYPT_N", 2**10)  # in-process only; the subprocess test uses the real cost
    env = {"REACTORCIDE_SECRETS_PASSWORD": "pw-for-tests", "REACTORCIDE_SECRETS_STORE": str(tmp_path / "store")}
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, **extra: str):
        return runner.invoke(main, list(args), input=input, env={**env, **extra}, catch_exceptions=False)

    return invoke


def test_store_life_cycle(cli):
    value = new_secret()
    assert cli("store", "init").exit_code == 0
    result = cli("store", "set", "prod/db", "password", input=value + "\n")
    assert result.exit_code == 0 and value not in result.output
    assert cli("store", "get", "prod/db", "password").output == value + "\n"
    assert cli("store", "list").output == "prod/db\n"
    listing = cli("store", "list", "prod/db")
    assert listing.output == "password\n" and value not in listing.output
    assert cli("store", "delete", "prod/db", "password").exit_code == 0
    missing = cli("store", "get", "prod/db", "password")
    assert missing.exit_code == 1 and "no secret at prod/db:password" in missing.output


def test_multiline_value_from_stdin(cli):
    pem = "-----BEGIN KEY-----\nabc\ndef\n-----END KEY-----"
    cli("store", "init")
    assert cli("store", "set", "keys", "deploy", input=pem + "\n").exit_code == 0
    assert cli("store", "get", "keys", "deploy").output == pem + "\n"


def test_store_option_overrides_environment(cli, tmp_path):
    other = tmp_path / "other"
    assert cli("store", "--store", str(other), "init").exit_code == 0
    assert (other / "secrets.enc").exists() and not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("store", "set", "bad path", "k"), "invalid secret PATH"),
        (("store", "set", "p", "bad/key"), "invalid secret KEY"),
        (("store", "get", "p", "k"), "not initialised"),
    ],
)
def test_errors_are_one_line(cli, args, message):
    result = cli(*args, input="value-1234\n")
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_wrong_password(cli):
    cli("store", "init")
    cli("store", "set", "p", "k", input="value-1234\n")
    result = cli("store", "get", "p", "k", REACTORCIDE_SECRETS_PASSWORD="wrong")
    assert result.exit_code == 1 and "wrong password" in result.output and "value-1234" not in result.output


def test_empty_value_refused(cli):
    cli("store", "init")
    result = cli("store", "set", "p", "k", input="")
    assert result.exit_code == 1 and "empty value" in result.output


def test_no_value_option_on_the_command_line(cli):
    """There is no way to pass a value on argv: an extra argument is a usage error."""
    cli("store", "init")
    result = cli("store", "set", "p", "k", "value-on-argv")
    assert result.exit_code == 78  # a command-line error: EX_CONFIG like every configuration error


def test_real_process_with_the_contract_cost(tmp_path):
    """End to end in a subprocess with the default scrypt cost (N=2**18): init, set from stdin, get."""
    value = new_secret()
    env = {**os.environ, "REACTORCIDE_SECRETS_PASSWORD": "pw", "REACTORCIDE_SECRETS_STORE": str(tmp_path / "s")}

    def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, "-m", "runnerlib.cli", "store", *args], input=stdin, env=env,
                              capture_output=True, timeout=120)

    assert run("init").returncode == 0
    assert run("set", "ci", "token", stdin=value.encode()).returncode == 0
    got = run("get", "ci", "token")
    assert got.returncode == 0 and got.stdout == value.encode() + b"\n"
    no_password = subprocess.run([PYTHON, "-m", "runnerlib.cli", "store", "get", "ci", "token"],
                                 env={k: v for k, v in env.items() if k != "REACTORCIDE_SECRETS_PASSWORD"},
                                 capture_output=True, timeout=120, stdin=subprocess.DEVNULL, start_new_session=True)
    assert no_password.returncode != 0 and b"REACTORCIDE_SECRETS_PASSWORD" in no_password.stderr
