"""The shell examples of docs/secrets.md work as written, against a live server, through a live stream."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from secrets_testlib import PYTHON, new_secret

from runnerlib.security.secret_socket import SecretSocketServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "secrets.md"


def example(name: str) -> str:
    match = re.search(r"```sh\n# example: " + re.escape(name) + r"\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"example {name} not found in {DOC}"
    return match.group(1)


@pytest.mark.parametrize("name", ["register-python3", "register-perl"])
def test_documented_shell_example(registry, name):
    if name == "register-perl" and not shutil.which("perl"):
        pytest.skip("perl is not installed")
    value = new_secret()
    with SecretSocketServer(registry) as server:
        env = {
            # python3 must be an interpreter every uid can run (the venv's); the rest from the system
            "PATH": f"{os.path.dirname(PYTHON)}:/usr/bin:/bin",
            "DEPLOY_TOKEN": value,
            **server.env(),
        }
        proc = subprocess.run(["sh", "-c", example(name)], env=env, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.replace(b" ", b"").strip() == b'{"status":"ok","registered":1}'
    assert value.encode() in registry.secrets()
    assert registry.mask_text(f"deploying with {value}") == "deploying with ***"


def test_documented_example_without_the_token_is_refused(registry):
    """The control: the same example without REACTORCIDE_SECRETS_TOKEN registers nothing."""
    value = new_secret()
    with SecretSocketServer(registry) as server:
        env = {"PATH": f"{os.path.dirname(PYTHON)}:/usr/bin:/bin", "DEPLOY_TOKEN": value,
               "REACTORCIDE_SECRETS_SOCKET": server.path, "REACTORCIDE_SECRETS_TOKEN": "stolen-but-wrong"}
        proc = subprocess.run(["sh", "-c", example("register-python3")], env=env, capture_output=True, timeout=60)
    assert b'"status": "error"' in proc.stdout
    assert value.encode() not in registry.secrets()
