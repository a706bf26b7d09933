"""Cross-checks with the real step runner (execution.process): the ways a step registers a secret at run time,
and that an untrusted step gets neither the socket nor the token."""

from __future__ import annotations

import os
import shlex

import pytest
from secrets_testlib import PYTHON, assert_no_fragment, new_secret

from runnerlib.security.secret_socket import SecretSocketServer

process = pytest.importorskip("runnerlib.execution.process")

REGISTER_AND_PRINT = (
    "import sys, runnerlib\n"
    "v = sys.stdin.readline().strip()\n"
    "runnerlib.register_secret(v)\n"
    "print('deploying with', v, flush=True)\n"
)


def run_untrusted_step(command: str, registry, env: dict[str, str]):
    """Fail closed first; where the kernel or uid cannot give full isolation, retry best-effort, since what is
    checked here (the environment and ::add-mask::) does not depend on the isolation's strength."""
    result = process.run_process(command, registry=registry, trusted=False, env=env)
    if result.refused:
        from runnerlib.security.policy import SandboxPolicy

        result = process.run_process(command, registry=registry, trusted=False, env=env,
                                     policy=SandboxPolicy(best_effort=True))
    if result.refused:
        pytest.skip(f"the sandbox cannot run an untrusted step here: {result.reason}")
    return result


def trusted_env(server: SecretSocketServer) -> dict[str, str]:
    return {"PATH": f"{os.path.dirname(PYTHON)}:/usr/bin:/bin", **server.env()}


def test_trusted_step_registers_over_the_socket_and_prints(registry, tmp_path):
    value = new_secret()
    (tmp_path / "v").write_text(value + "\n")
    script = tmp_path / "step.py"
    script.write_text(REGISTER_AND_PRINT)
    with SecretSocketServer(registry) as server:
        result = process.run_process(f"{shlex.quote(PYTHON)} {script} < {tmp_path / 'v'}", registry=registry,
                                     trusted=True, env=trusted_env(server))
    assert result.exit_code == 0, result.output
    assert "deploying with ***" in result.output
    assert_no_fragment(result.output.encode(), value)


def test_trusted_step_uses_the_cli(registry, tmp_path):
    value = new_secret()
    (tmp_path / "v").write_text(value + "\n")
    command = (f"{shlex.quote(PYTHON)} -m runnerlib.cli secrets add < {tmp_path / 'v'} && "
               f"echo \"token=$(cat {tmp_path / 'v'})\"")
    with SecretSocketServer(registry) as server:
        result = process.run_process(command, registry=registry, trusted=True, env=trusted_env(server))
    assert result.exit_code == 0, result.output
    assert "token=***" in result.output
    assert_no_fragment(result.output.encode(), value)


def test_trusted_step_in_band(registry, tmp_path):
    value = new_secret()
    (tmp_path / "v").write_text(value)
    command = f'v=$(cat {tmp_path / "v"}); echo "::add-mask::$v"; echo "value=$v"'
    result = process.run_process(command, registry=registry, trusted=True, env={"PATH": "/usr/bin:/bin"})
    assert result.exit_code == 0
    assert result.output.strip() == "value=***"


def test_step_that_does_not_register_leaks(registry, tmp_path):
    """The control for the three tests above: without registration the value is printed in clear."""
    value = new_secret()
    (tmp_path / "v").write_text(value)
    result = process.run_process(f'echo "value=$(cat {tmp_path / "v"})"', registry=registry, trusted=True,
                                 env={"PATH": "/usr/bin:/bin"})
    assert value in result.output


def test_untrusted_step_gets_neither_socket_nor_token(registry):
    with SecretSocketServer(registry) as server:
        env = {"PATH": "/usr/bin:/bin", **server.env()}
        result = run_untrusted_step("env", registry, env)
        assert result.exit_code == 0, result.output
        assert "REACTORCIDE_SECRETS_SOCKET" not in result.output
        assert "REACTORCIDE_SECRETS_TOKEN" not in result.output
        assert server.path not in result.output
        # control: a trusted step with the same env sees both (masked token, visible path)
        seen = process.run_process("env", registry=registry, trusted=True, env=env)
        assert "REACTORCIDE_SECRETS_SOCKET=" + server.path in seen.output
        assert "REACTORCIDE_SECRETS_TOKEN=***" in seen.output


def test_untrusted_step_cannot_register_in_band(registry):
    result = run_untrusted_step('echo "::add-mask::PASSED"; echo "tests PASSED"', registry, {"PATH": "/usr/bin:/bin"})
    assert "tests PASSED" in result.output and len(registry.secrets()) == 0
