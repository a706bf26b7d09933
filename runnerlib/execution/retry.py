"""Retries and soft failure by cause: `retry: {max, exit_codes, signals, backoff}` and
`allow_failure: {exit_codes}`, as GitLab CI and Buildkite users write them.

Rules (docs/executor.md, "Retries and soft failure"):
- `max` is the number of extra attempts (GitLab's `retry: max`); `retry: 2` is short for `{max: 2}`;
- with neither `exit_codes` nor `signals`, every failure and every timeout is retried (the old `retries: N`);
  with either, only an attempt whose exit code is listed, or that ended by a listed signal, is retried;
- a step killed by signal N reports exit 128 + N (as shells do: `sh -c` reports its child's death that way),
  so `signals: [SIGKILL]` and `exit_codes: [137]` match the same attempts; a step timeout is exit 124
  (`exit_codes: [124]`), never a signal, although runnerlib stops it with SIGTERM;
- refused (126 before exec) and cancelled attempts are never retried;
- `backoff: B` waits B * 2**(k-1) seconds before the k-th retry (2, 4, 8 ... for B = 2), at most
  MAX_DELAY each; a cancellation ends the wait at once;
- `allow_failure: {exit_codes: [...]}` lets the step fail without failing the job only when its final exit
  code is listed (GitLab's form); `allow_failure: true` allows any failure, as before.
"""

from __future__ import annotations

import signal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_RETRIES = 10
MAX_BACKOFF = 3600.0
MAX_DELAY = 300.0
TIMEOUT_EXIT = 124


def _exit_codes(values: list[int] | None) -> list[int] | None:
    for value in values or ():
        if not 0 <= value <= 255:
            raise ValueError(f"exit code {value} is outside 0-255")
    return values


class RetryPolicy(BaseModel):
    """`retry:` of a step. See the module docstring for the rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max: int = Field(default=0, ge=0, le=MAX_RETRIES, description="Extra attempts (0-10).")
    exit_codes: list[int] | None = Field(
        default=None, description="Retry only these exit codes (124: the step timed out).")
    signals: list[int] | None = Field(
        default=None, description="Retry only when ended by these signals (names like SIGKILL or numbers).")
    backoff: float = Field(default=0.0, ge=0, le=MAX_BACKOFF,
                           description="Seconds before the first retry, doubled for each next one.")

    _codes = field_validator("exit_codes")(classmethod(lambda cls, v: _exit_codes(v)))

    @field_validator("signals", mode="before")
    @classmethod
    def _signals(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, list):
            value = [value]
        return [signal_number(item) for item in value]

    @property
    def selective(self) -> bool:
        """Whether only some causes are retried (exit_codes or signals given)."""
        return self.exit_codes is not None or self.signals is not None

    def retries_on(self, exit_code: int) -> bool:
        """Whether an attempt that failed or timed out with `exit_code` is retried (attempts left aside)."""
        if not self.selective:
            return True
        if exit_code in (self.exit_codes or ()):
            return True
        return exit_code > 128 and exit_code - 128 in (self.signals or ())

    def delay(self, retry: int) -> float:
        """Seconds to wait before the `retry`-th retry (1-based)."""
        if not self.backoff:
            return 0.0
        return min(self.backoff * 2 ** min(retry - 1, 30), MAX_DELAY)


def signal_number(value: Any) -> int:
    """A signal given as a number (9), a name (SIGKILL) or a short name (KILL, kill)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a signal")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        member = getattr(signal.Signals, name, None) if name.isidentifier() else None
        if member is None:
            raise ValueError(f"unknown signal {value!r} (e.g. SIGKILL, SIGTERM, 9)")
        number = int(member)
    else:
        raise ValueError(f"{value!r} is not a signal")
    if not 1 <= number <= 64:
        raise ValueError(f"signal {number} is outside 1-64")
    return number


class AllowFailurePolicy(BaseModel):
    """`allow_failure: {exit_codes: [...]}`: a soft failure only for these final exit codes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exit_codes: list[int] = Field(min_length=1, description="Exit codes that do not fail the job.")

    _codes = field_validator("exit_codes")(classmethod(lambda cls, v: _exit_codes(v)))


def retry_policy(value: Any) -> RetryPolicy | None:
    """`retry:` as written (None, an int, a mapping, a RetryPolicy) as a RetryPolicy (None when absent)."""
    if value is None or isinstance(value, RetryPolicy):
        return value
    if isinstance(value, bool):
        raise ValueError("retry: give a number of retries or a mapping {max, exit_codes, signals, backoff}")
    if isinstance(value, int):
        return RetryPolicy(max=value)
    return RetryPolicy.model_validate(value)


def allows_failure(policy: bool | AllowFailurePolicy, status: str, exit_code: int | None) -> bool:
    """Whether a step that ended `status` with `exit_code` is allowed to fail under `policy`."""
    if isinstance(policy, AllowFailurePolicy):
        return status != "cancelled" and exit_code is not None and exit_code in policy.exit_codes
    return bool(policy)
