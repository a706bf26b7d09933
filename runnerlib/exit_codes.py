"""The exit status of every runnerlib command, and the one-line text of an error.

One table for every command (docs/getting-started.md and README show it):

    0    success
    N    a required step failed with exit status N (its own code, unchanged)
    1    a runner failure: a plugin, source preparation, the file system, the network
    78   a configuration, command-line, job-file or workflow-file error (EX_CONFIG of sysexits.h): nothing ran
    124  a step or the job timed out
    126  an untrusted step was refused by the sandbox policy
    130  interrupted (Ctrl-C); a second Ctrl-C kills the steps at once
    141  the reader of our output went away (`runnerlib ... | head`)
    143  cancelled by SIGTERM

78 is far from the codes steps usually exit with (1, 2 for make and the shells' usage errors, 126/127 for
commands that cannot run), so a wrapper can tell "the job file is wrong" from "the tests failed".

This module imports nothing from runnerlib: every layer may use it.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 78
EXIT_TIMEOUT = 124
EXIT_REFUSED = 126
EXIT_INTERRUPTED = 130
EXIT_PIPE = 141
EXIT_TERMINATED = 143

# Exception classes (by name, so this module imports nothing) that mean "the input is wrong, nothing ran".
# Each module keeps its own class; a class may also say so itself with `exit_status = 78`.
_CONFIG_ERRORS = frozenset({
    "ConfigError", "JobDefinitionError", "WorkflowError", "PathPolicyError", "ConditionError",
    "SecretsDocumentError", "UsageError", "BadParameter", "NoSuchOption", "BadOptionUsage", "BadArgumentUsage",
    "MissingParameter", "PayloadMaskingError",
})


def exit_status(exc: BaseException) -> int:
    """The exit status an uncaught `exc` ends a command with: 78 for input errors, else 1."""
    declared = getattr(exc, "exit_status", None)
    if isinstance(declared, int):
        return declared
    if any(cls.__name__ in _CONFIG_ERRORS for cls in type(exc).__mro__):
        return EXIT_CONFIG
    return EXIT_FAILURE


def error_text(exc: BaseException) -> str:
    """`exc` as one line without Python class names: what a user reads after `runnerlib: error:`.

    An OSError reads like the shell tools' messages ("/job/x: permission denied"), other exceptions give
    their message; only an exception with no message at all falls back to a plain-words class name.
    """
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror[:1].lower() + exc.strerror[1:]
        target = exc.filename if exc.filename is not None else None
        text = f"{target}: {reason}" if target is not None else reason
        if exc.filename2 is not None:
            text += f" (to {exc.filename2})"
    else:
        text = str(exc)
        if isinstance(exc, KeyError) and exc.args:
            text = f"missing key {exc.args[0]!r}"
    text = " ".join(text.split())
    if not text:
        # "TimeoutError" -> "timeout error": the kind of failure in words.
        name = type(exc).__name__
        text = "".join(" " + c.lower() if c.isupper() else c for c in name).strip()
    return text


def is_config_error(exc: BaseException) -> bool:
    """Whether `exc` is an input error (exit 78)."""
    return exit_status(exc) == EXIT_CONFIG
