"""The one rule for what reaches an untrusted step (security/untrusted_env.allowed_for_untrusted), used by process
mode (build_untrusted_env) and container mode (execution/container_steps.step_variables) alike."""

from __future__ import annotations

import base64

import pytest

from runnerlib.execution import container_steps
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


def _container_variables(registry: SecretRegistry, job_env: dict[str, str]) -> dict[str, str]:
    """What container mode gives an untrusted step whose job's env is `job_env` (a runner with just what
    step_variables reads)."""
    from types import SimpleNamespace

    runner = SimpleNamespace(
        config=SimpleNamespace(secret_env_names=("DEPLOY_TOKEN",), job_env=job_env), _job_env=job_env,
        _context_env=dict, context=SimpleNamespace(env={}), environ={"PATH": "/usr/bin"}, _socket=None,
        registry=registry)
    step = SimpleNamespace(env={})
    files = SimpleNamespace(env={}, directory="/job/artifacts/.step")
    container = SimpleNamespace(in_container=lambda v: v)
    values, _mounts = container_steps.step_variables(runner, step, dict(job_env), False, files, container)  # type: ignore[arg-type]
    return values


@pytest.mark.parametrize("name", ["SSH_AUTH_SOCK", "GIT_CONFIG_GLOBAL", "GIT_ASKPASS", "REACTORCIDE_TRIGGERS_FILE"])
def test_container_mode_refuses_runner_credentials_by_name(registry: SecretRegistry, name: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """ATTACK: a job's env sets a runner credential's name; an untrusted step in a container got it, because
    container mode had a copy of the rule without process mode's NEVER list. Control: that old rule (the name
    rules of step_env plus the registry's mask) lets it through."""
    from runnerlib import step_env

    job_env = {name: "/tmp/agent.sock", "GREETING": "hello", "COPY_B64": base64.b64encode(SECRET.encode()).decode()}
    values = _container_variables(registry, job_env)
    assert name not in values and "COPY_B64" not in values and values["GREETING"] == "hello"

    def old_rule(n: str, v: str, *, registry: SecretRegistry, named: object, known: object) -> bool:
        return step_env.safe_for_untrusted(n, v, secret_env_names=("DEPLOY_TOKEN",), secrets=registry.secrets()) \
            and registry.mask_text(v) == v

    monkeypatch.setattr(container_steps, "allowed_for_untrusted", old_rule)
    assert name in _container_variables(registry, job_env)
