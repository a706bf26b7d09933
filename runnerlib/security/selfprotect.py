"""The runner's own hardening at start-up: non-dumpable, secrets scrubbed from its /proc view, subreaper.

  * PR_SET_DUMPABLE 0: /proc/<runner>/environ, mem and maps become unreadable to same-uid processes
    (cmdline stays world-readable, so secrets must never travel on argv).
  * The original argv and environment blocks (what /proc shows; os.environ is a copy) are overwritten
    where they held a secret. This narrows a window, it does not close it: a poller can read the blocks
    between exec and this call.
  * PR_SET_CHILD_SUBREAPER: orphaned descendants are re-parented to the runner, so none escapes cleanup.

Call it as early as possible, once the secrets are known:

    registry = SecretRegistry(); load_secrets(registry)
    protect_runner(registry.secrets())
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from runnerlib.security.lowlevel import procmem
from runnerlib.security.lowlevel.prctl import PR_SET_CHILD_SUBREAPER, PR_SET_DUMPABLE, prctl

log = logging.getLogger("runnerlib.selfprotect")


@dataclass(frozen=True)
class Protection:
    """What protect_runner did (counts only, never values)."""

    argv_cleared: int
    environ_cleared: int
    dumpable: bool
    subreaper: bool

    def describe(self) -> str:
        return (f"runner hardened: dumpable={'yes' if self.dumpable else 'no'}, "
                f"subreaper={'yes' if self.subreaper else 'no'}, {self.argv_cleared} argv and "
                f"{self.environ_cleared} environment entries scrubbed")


def protect_runner(secret_values: Iterable[str | bytes]) -> Protection:
    """Harden the calling process (idempotent). Secrets shorter than 4 bytes are ignored (too many false hits).

    Example::

        >>> p = protect_runner([])          # doctest: +SKIP
        >>> p.dumpable
        False
    """
    secrets = [v.encode() if isinstance(v, str) else bytes(v) for v in secret_values]
    secrets = [s for s in secrets if len(s) >= 4]

    def holds_secret(entry: bytes) -> bool:
        return any(s in entry for s in secrets)

    argv_cleared = environ_cleared = 0
    if secrets:
        try:
            argv_cleared = procmem.scrub_argv(holds_secret)
            environ_cleared = procmem.scrub_environ(lambda e: holds_secret(e.partition(b"=")[2]))
        except OSError as exc:  # /proc not mounted, or mem not writable: the prctl steps still apply
            log.warning("could not scrub the runner's argv/environment blocks: %s", exc.strerror or exc)
    prctl(PR_SET_DUMPABLE, 0)
    subreaper = True
    try:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
    except OSError:
        subreaper = False
    result = Protection(argv_cleared, environ_cleared, dumpable=False, subreaper=subreaper)
    log.info("%s", result.describe())
    return result
