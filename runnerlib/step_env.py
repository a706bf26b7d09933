"""The environment a step gets: the job's context every step sees, and what trusted and untrusted steps add.

- context: the REACTORCIDE_* variables that describe the job (its directories, name, event), the same for
  every step;
- trusted steps: the runner's whole environment, the context, the job's env, what plugins set, the state
  file of this job's steps;
- untrusted steps: a few base variables (PATH, HOME, LANG, ...), the context, and whatever of the job's and
  plugins' env is safe: no variable that is secret by name (secret_env_names, the default patterns,
  REACTORCIDE_SECRET*, the coordinator's token and URL) or holds a registered secret.

The runner (runner.py) adds the step's own env, the step protocol's files and the socket on top.

Example::

    env = trusted_env(config, environ=os.environ, job_env=config.job_env, plugin_env={})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from runnerlib.security.secret_names import is_secret_name

__all__ = ["BASE_ENV_NAMES", "context_env", "safe_for_untrusted", "trusted_env", "untrusted_env"]

# Variables every step gets whatever the environment; the rest of the runner's environment only reaches
# trusted steps.
BASE_ENV_NAMES = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ", "TMPDIR", "USER", "LOGNAME",
                  "SHELL", "PYTHONPATH", "VIRTUAL_ENV")
NEVER_UNTRUSTED = ("REACTORCIDE_API_TOKEN", "REACTORCIDE_COORDINATOR_URL")


def context_env(config: Any) -> dict[str, str]:
    """The REACTORCIDE_* variables describing the job, as every step sees them."""
    c = config
    env = {
        "REACTORCIDE_WORKSPACE": c.workspace_root, "REACTORCIDE_CODE_DIR": c.code_dir or "",
        "REACTORCIDE_JOB_DIR": c.job_dir or "", "REACTORCIDE_SOURCE_DIR": c.code_dir or "",
        "REACTORCIDE_CI_SOURCE_DIR": c.ci_dir or "", "REACTORCIDE_ARTIFACTS_DIR": c.artifacts_dir or "",
        "REACTORCIDE_TRIGGERS_FILE": c.triggers_file or "", "REACTORCIDE_JOB_NAME": c.job_name,
        # Where run_untrusted() puts PR code (runnerlib.source.pristine): never the pristine src.
        "REACTORCIDE_UNTRUSTED_SOURCE_DIR": str(Path(c.workspace_root) / ".untrusted" / "src"),
    }
    for name in ("job_id", "queue", "branch", "sha", "event_type", "pr_number"):
        value = getattr(c, name)
        if value is not None:
            env[f"REACTORCIDE_{name.upper()}"] = str(value)
    if c.in_container:
        env["REACTORCIDE_IN_CONTAINER"] = "true"
    return env


def safe_for_untrusted(name: str, value: str, *, secret_env_names: Iterable[str], secrets: Iterable[bytes]) -> bool:
    """Whether a variable may reach an untrusted step: not secret-named, holding no registered secret.

    >>> safe_for_untrusted("DEPLOY_TOKEN", "x", secret_env_names=(), secrets=())
    False
    """
    if name in secret_env_names or is_secret_name(name) or name.startswith("REACTORCIDE_SECRET"):
        return False
    if name in NEVER_UNTRUSTED:
        return False
    data = value.encode("utf-8", "surrogateescape")
    return not any(s in data for s in secrets if s)


def trusted_env(config: Any, *, environ: Mapping[str, str], job_env: Mapping[str, str],
                plugin_env: Mapping[str, str], state_env: Mapping[str, str] = {}) -> dict[str, str]:  # noqa: B006
    """A trusted step's environment before its own env: the runner's, the context, the job's, the plugins'."""
    env = dict(environ)
    env.update(context_env(config))
    env.update(job_env)
    env.update(state_env)
    if config.allow_insecure_transport:
        # --allow-insecure-transport may be a CLI flag: trigger_job's own coordinator POSTs read the variable.
        env["REACTORCIDE_ALLOW_INSECURE_TRANSPORT"] = "true"
    env.update(plugin_env)
    return env


def untrusted_env(config: Any, *, environ: Mapping[str, str], job_env: Mapping[str, str],
                  plugin_env: Mapping[str, str], baseline: Mapping[str, str], secrets: Iterable[bytes]
                  ) -> dict[str, str]:
    """An untrusted step's environment before its own env: base variables, the context, and what is safe of
    the job's env and of what plugins set (not what they merely kept from the runner's environment)."""
    known = [s for s in secrets if s]

    def clean(name: str, value: str) -> bool:
        return safe_for_untrusted(name, value, secret_env_names=config.secret_env_names, secrets=known)

    env = {k: v for k, v in environ.items() if k in BASE_ENV_NAMES and clean(k, v)}
    env.update(context_env(config))
    env.update({k: v for k, v in job_env.items() if clean(k, v)})
    env.update({k: v for k, v in plugin_env.items() if baseline.get(k) != v and clean(k, v)})
    return env
