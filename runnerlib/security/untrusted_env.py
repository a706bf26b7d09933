"""The environment of an untrusted step: an explicit allow-list, never a copy of the runner's environment.

Kept: PATH (a fixed system PATH unless the job sets one), HOME and TMPDIR (the step's private tmp), CI=true,
the locale and terminal basics, the job's context variables (branch, sha, event...), and the job's own
variables. Dropped, even when the job set them: any variable whose name looks secret (`is_secret_name`),
whose name is listed in REACTORCIDE_SECRET_ENV_NAMES, or whose value contains a registered secret or one
of its encoded forms; the registration socket and its token, the API token, the secret sources, the VCS
credentials and the SSH agent socket. Dropped names are logged (never values).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping
from typing import Any

from runnerlib.security.secret_names import is_secret_name

log = logging.getLogger("runnerlib.sandbox.env")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Never given to an untrusted step, whatever their values.
NEVER = frozenset({
    "REACTORCIDE_SECRETS_SOCKET", "REACTORCIDE_SECRETS_TOKEN", "REACTORCIDE_API_TOKEN",
    "REACTORCIDE_SECRETS_FILE", "REACTORCIDE_SECRET_VALUES_LIST", "REACTORCIDE_SECRET_ENV_NAMES",
    "REACTORCIDE_SECRETS_PASSWORD", "REACTORCIDE_VCS_AUTH_DIR", "REACTORCIDE_COORDINATOR_URL",
    "REACTORCIDE_TRIGGERS_FILE", "REACTORCIDE_PLUGIN_DIR", "GIT_CONFIG_GLOBAL", "SSH_AUTH_SOCK",
    "GIT_ASKPASS", "SSH_ASKPASS",
})
# Taken from the runner's environment when present (context a build may print or branch on).
FROM_RUNNER = (
    "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM",
    "REACTORCIDE_JOB_ID", "REACTORCIDE_QUEUE", "REACTORCIDE_BRANCH", "REACTORCIDE_SHA",
    "REACTORCIDE_EVENT_TYPE", "REACTORCIDE_PR_NUMBER", "REACTORCIDE_SOURCE_DIR", "REACTORCIDE_CI_SOURCE_DIR",
    "REACTORCIDE_IN_CONTAINER",
)


def named_secrets(environ: Mapping[str, str]) -> set[str]:
    """The names REACTORCIDE_SECRET_ENV_NAMES lists in `environ` (comma- or line-separated)."""
    names = environ.get("REACTORCIDE_SECRET_ENV_NAMES", "")
    return {n.strip() for n in names.replace("\n", ",").split(",") if n.strip()}


def allowed_for_untrusted(name: str, value: str, *, registry: Any, named: Collection[str] = frozenset(),
                          known: Mapping[str, str] | None = None) -> bool:
    """Whether one variable may reach an untrusted step, in a process or in a container (the one rule both
    modes apply): not a runner credential (NEVER, `REACTORCIDE_SECRET*`), not secret by name (`named`, the
    default patterns), no NUL or `=`, and - unless `known` holds exactly this value under this name (see
    build_untrusted_env) - no registered secret in it, in any form the registry masks.

    >>> from runnerlib.security.registry import SecretRegistry
    >>> reg = SecretRegistry(); _ = reg.add("hunter2-very-secret", source="doc")
    >>> [allowed_for_untrusted(n, v, registry=reg) for n, v in [("A", "aHVudGVyMi12ZXJ5LXNlY3JldA=="), ("B", "b")]]
    [False, True]
    """
    if (name in NEVER or name.startswith("REACTORCIDE_SECRET") or name in named or is_secret_name(name)
            or "\0" in value or "=" in name or not name):
        return False
    if known is not None and known.get(name) == value:
        return True
    raw = value.encode("utf-8", "surrogateescape")
    if any(s in raw for s in registry.secrets() if s):
        return False
    return bool(registry.mask(raw) == raw)  # encoded forms (base64, URL, JSON) of a secret


def build_untrusted_env(job_env: Mapping[str, str], *, registry: Any, tmpdir: str | None,
                        base_env: Mapping[str, str] | None = None,
                        known: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allow-listed environment for an untrusted step.

    `job_env`: the job's variables meant for the step; `registry`: the job's SecretRegistry (values that
    contain a secret are dropped); `tmpdir`: the private tmp (TMPDIR and HOME); `base_env`: where PATH,
    LANG and the context variables come from (default: os.environ). `known`: values the step's own kind
    wrote (an untrusted upstream step's GITHUB_ENV lines): a variable of `job_env` holding exactly that value
    passes the name rules only. Dropping it when it held a secret would tell the step which of its guesses
    was one (it knew the value already: it holds no secret).

    >>> from runnerlib.security.registry import SecretRegistry
    >>> reg = SecretRegistry(); _ = reg.add("hunter2-very-secret", source="doc")
    >>> env = build_untrusted_env({"GREETING": "hi", "DB_PASSWORD": "x", "URL": "u:hunter2-very-secret@h"},
    ...                           registry=reg, tmpdir="/tmp/t", base_env={})
    >>> sorted(env)
    ['CI', 'GREETING', 'HOME', 'LANG', 'PATH', 'TMPDIR']
    """
    base = os.environ if base_env is None else base_env
    named = named_secrets(base) | named_secrets(job_env)
    dropped: list[str] = []

    def allowed(name: str, value: str) -> bool:
        return allowed_for_untrusted(name, value, registry=registry, named=named, known=known)

    env: dict[str, str] = {"PATH": DEFAULT_PATH}
    for name in FROM_RUNNER:
        if name in base and allowed(name, base[name]):
            env[name] = base[name]
    env.setdefault("LANG", "C.UTF-8")
    for name, value in job_env.items():
        if allowed(name, value):
            env[name] = value
        else:
            dropped.append(name)
    env["CI"] = "true"
    if tmpdir:
        env["TMPDIR"] = env["HOME"] = tmpdir
    else:
        env.setdefault("HOME", "/nonexistent")
    if dropped:
        log.info("untrusted step environment: dropped %s", ", ".join(sorted(dropped)))
    return env
