"""Least privilege for trusted steps: with a job's `secrets: declared`, a step gets the secrets it lists only.

A trusted step's environment is the runner's (minus nothing) by default: every secret variable reaches every
trusted step, so a compromised linter step could read the deploy key. When the job declares its secrets, the
runner withholds from each trusted step every secret variable its `secrets:` does not list. What counts as a
secret variable is what the runner already keeps from untrusted steps (a secret name, a name in
secret_env_names, or a value holding a registered secret), so the two rules cannot drift apart.

This is least privilege, not isolation: trusted steps run as the runner's uid, so a malicious trusted step can
still read a sibling trusted step's /proc/PID/environ (and, as root, much more). It limits what a mistaken or
compromised tool in a step can reach, and what it could leak through its own output. Masking is unchanged:
every secret of the job is masked in every step's output, declared or not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping


def withhold_undeclared(env: Mapping[str, str], declared: Iterable[str],
                        is_secret: Callable[[str, str], bool]) -> tuple[dict[str, str], list[str], list[str]]:
    """(env without the undeclared secret variables, the names withheld, declared names that are not set).

    >>> withhold_undeclared({"A_TOKEN": "x1", "B_TOKEN": "x2", "PATH": "/bin"}, ["B_TOKEN", "C_KEY"],
    ...                     lambda name, value: name.endswith(("TOKEN", "KEY")))
    ({'B_TOKEN': 'x2', 'PATH': '/bin'}, ['A_TOKEN'], ['C_KEY'])
    """
    wanted = set(declared)
    kept: dict[str, str] = {}
    withheld: list[str] = []
    for name, value in env.items():
        if name not in wanted and is_secret(name, value):
            withheld.append(name)
        else:
            kept[name] = value
    missing = sorted(wanted - set(env))
    return kept, sorted(withheld), missing
