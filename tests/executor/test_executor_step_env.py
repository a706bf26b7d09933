"""runnerlib.step_env: what trusted and untrusted steps get of the job's environment."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from runnerlib.config import JobConfig
from runnerlib.step_env import context_env, trusted_env, untrusted_env

SECRET = b"s3cr3t-Value-9Qx"
names = st.from_regex(r"[A-Z][A-Z0-9_]{0,12}", fullmatch=True)
values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)


def _config(**kw: object) -> JobConfig:
    return JobConfig(workspace_root="/job", secret_env_names=["DB_PASS"], **kw)


@given(st.dictionaries(names, values, max_size=6), names, values, values)
def test_untrusted_env_never_holds_a_registered_secret(job_env, name, before, after):  # type: ignore[no-untyped-def]
    job_env = {**job_env, name: before + SECRET.decode() + after, "DB_PASS": "pw-123456"}
    config = _config()
    env = untrusted_env(config, environ={"PATH": "/usr/bin", "HOME": "/root", "OTHER": "x"}, job_env=job_env,
                        plugin_env={}, baseline={}, secrets=[SECRET])
    assert not any(SECRET.decode() in v for v in env.values()) and "DB_PASS" not in env
    assert "OTHER" not in env and env["PATH"] == "/usr/bin"
    # Control: a trusted step gets the same variables, the secret included.
    trusted = trusted_env(config, environ={"PATH": "/usr/bin"}, job_env=job_env, plugin_env={})
    assert SECRET.decode() in trusted[name] and trusted["DB_PASS"] == "pw-123456"


def test_context_and_plugin_env() -> None:
    config = _config(job_name="build", branch="main")
    ctx = context_env(config)
    assert ctx["REACTORCIDE_JOB_NAME"] == "build" and ctx["REACTORCIDE_BRANCH"] == "main"
    assert ctx["REACTORCIDE_UNTRUSTED_SOURCE_DIR"] == "/job/.untrusted/src"
    # Untrusted steps get what plugins set, not what plugins merely kept from the runner's environment.
    env = untrusted_env(config, environ={}, job_env={}, plugin_env={"KEPT": "1", "SET": "2"},
                        baseline={"KEPT": "1"}, secrets=[])
    assert "SET" in env and "KEPT" not in env
