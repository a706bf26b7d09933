"""The one rule for what reaches an untrusted step (security/untrusted_env.allowed_for_untrusted), used by process
mode (build_untrusted_env) and container mode (execution/container_steps.step_variables) alike."""

from __future__ import annotations

import base64
import inspect

import pytest

from runnerlib.execution import container_steps
from runnerlib.security import untrusted_env
from runnerlib.security.registry import SecretRegistry
from runnerlib.security.untrusted_env import allowed_for_untrusted, build_untrusted_env

SECRET = "s3cr3t-Xk9fQ2mZ7pLw4RtY"


@pytest.fixture
def registry() -> SecretRegistry:
    reg = SecretRegistry()
    reg.add(SECRET, source="test")
    return reg


@pytest.mark.parametrize(("name", "value"), [
    ("COPY", SECRET), ("B64", base64.b64encode(SECRET.encode()).decode()), ("URL", f"https://u:{SECRET}@h/"),
    ("DEPLOY_TOKEN", "x"), ("LISTED", "x"), ("SSH_AUTH_SOCK", "/tmp/agent"), ("REACTORCIDE_SECRETS_EXTRA", "x"),
    ("NUL", "a\0b"), ("A=B", "x"),
])
def test_attacks_are_refused_in_both_modes(registry: SecretRegistry, name: str, value: str) -> None:
    """ATTACK: a variable an untrusted step must not get (a secret copied, its base64, a secret name, a runner
    credential, a NUL). Control: the same value under a plain name with no secret in it passes."""
    assert not allowed_for_untrusted(name, value, registry=registry, named={"LISTED"})
    assert name not in build_untrusted_env({name: value, "LISTED": "x"}, registry=registry, tmpdir=None,
                                           base_env={"REACTORCIDE_SECRET_ENV_NAMES": "LISTED"})
    assert allowed_for_untrusted("PLAIN", "hello", registry=registry, named={"LISTED"})


def test_a_value_the_step_wrote_itself_passes_the_value_check(registry: SecretRegistry) -> None:
    known = {"GUESS": SECRET}
    assert allowed_for_untrusted("GUESS", SECRET, registry=registry, known=known)
    assert not allowed_for_untrusted("DEPLOY_TOKEN", SECRET, registry=registry, known={"DEPLOY_TOKEN": SECRET})


def test_container_mode_applies_the_same_rule() -> None:
    """Container mode calls the same function (it had a second copy of the rule, which let SSH_AUTH_SOCK and
    other runner credentials through by name)."""
    assert "allowed_for_untrusted(" in inspect.getsource(container_steps.step_variables)
    assert untrusted_env.allowed_for_untrusted is container_steps.allowed_for_untrusted
