"""Default secret-name patterns: environment variables whose values are masked without being named.

The list follows what Buildkite masks by default and what GitHub Actions / GitLab users name their secrets,
so that `FOO_TOKEN=... runnerlib mask` masks the token without `--secret-env FOO_TOKEN`.

>>> is_secret_name("GITHUB_TOKEN"), is_secret_name("db_password"), is_secret_name("PATH")
(True, True, False)
"""

from __future__ import annotations

import fnmatch
import re

# Shell-style globs, matched case-insensitively against the whole variable name.
DEFAULT_SECRET_NAME_PATTERNS: tuple[str, ...] = (
    "*_TOKEN",
    "*_SECRET",
    "*_PASSWORD",
    "*_PASSWD",
    "*_PASSPHRASE",
    "*_PRIVATE_KEY",
    "*_API_KEY",
    "*_APIKEY",
    "*_ACCESS_KEY",
    "*_SECRET_KEY",
    "*_SECRET_ACCESS_KEY",
    "*_SSH_KEY",
    "*_CONNECTION_STRING",
    "*_CREDENTIALS",
    "*_AUTH_TOKEN",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "API_KEY",
)

# Compiled once: fnmatch.translate gives an anchored regex per glob; one alternation tests them all.
_NAME_RE = re.compile(
    "|".join(fnmatch.translate(p) for p in DEFAULT_SECRET_NAME_PATTERNS), re.IGNORECASE
)


def is_secret_name(name: str, patterns: tuple[str, ...] | None = None) -> bool:
    """Whether an environment variable `name` matches the secret-name patterns (case-insensitive).

    `patterns` replaces the defaults when given (shell globs such as ``"*_TOKEN"``).
    """
    if not name:
        return False
    if patterns is None:
        return _NAME_RE.match(name) is not None
    return any(fnmatch.fnmatchcase(name.upper(), p.upper()) for p in patterns)


def secret_names_in(environ: dict[str, str], patterns: tuple[str, ...] | None = None) -> list[str]:
    """The names in `environ` that match the secret-name patterns, sorted (names only, never values)."""
    return sorted(n for n in environ if is_secret_name(n, patterns))
