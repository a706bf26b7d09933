"""How a job stops early: SIGTERM, Ctrl-C (and a second one), and the job's timeout.

- SIGTERM (the worker) and a first Ctrl-C (a laptop) cancel the job alike: running steps get SIGTERM once,
  then SIGKILL after the grace (execution/process.py), nothing new starts, ON_ERROR and CLEANUP still run.
  The job exits 143 for SIGTERM, 130 for SIGINT;
- a second Ctrl-C kills the running steps at once (no grace); a second SIGTERM changes nothing (the step
  already got its one SIGTERM);
- the job's timeout cancels the same way and the job exits 124, its running steps reported "timed out";
- outside the step phase (plugins, source preparation) nothing polls the flag often enough, so the handler
  raises JobCancelled in the main thread, and the timeout interrupts the main thread with SIGTERM to get there.
  JobCancelled is raised only while `interruptible()` is active: ON_ERROR and CLEANUP are never unwound.

Example::

    stop = Cancellation(handle_signals=True)
    with stop.handlers(), stop.interruptible():
        stop.start_timer(600)
        stop.check()                     # raises JobCancelled once cancelled
        with stop.steps(scheduler):      # scheduler.cancel() from now on
            result = scheduler.run()
    exit_code = stop.code() or result.exit_code
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from runnerlib.exit_codes import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_TIMEOUT

__all__ = ["Cancellation", "JobCancelled"]


class JobCancelled(BaseException):
    """Raised in the main thread by the SIGTERM handler outside the step phase (BaseException: plugins'
    `except Exception` must not swallow it)."""


class Cancellation:
    """One job's cancellation state and the signal handlers that set it.

    `event` is set once the job is cancelled (a signal, the timeout, `cancel()`); `timed_out` says the job's
    timeout did it; `interrupt_code` is 130 after a first SIGINT, else 143.
    """

    def __init__(self, *, handle_signals: bool = True) -> None:
        self.handle_signals = handle_signals
        self.event = threading.Event()
        self.timed_out = False
        self.interrupt_code = EXIT_TERMINATED
        self._scheduler: Any = None  # the running steps' Scheduler, told to cancel
        self._in_steps = False
        self._interruptible = False
        self._timer: threading.Timer | None = None

    # -- state -------------------------------------------------------------------------------------------

    def cancel(self) -> None:
        """What SIGTERM does: cancel running steps (grace, then kill) and start nothing new."""
        self.event.set()
        if self._scheduler is not None:
            self._scheduler.cancel()

    def is_set(self) -> bool:
        """Whether the job has been cancelled (or timed out)."""
        return self.event.is_set()

    def check(self) -> None:
        """Raise JobCancelled when the job has been cancelled: between phases, nothing else polls."""
        if self.event.is_set():
            raise JobCancelled()

    def code(self) -> int | None:
        """The job's exit code because of the cancellation (124 timed out, 130 SIGINT, 143 SIGTERM), or None."""
        if self.timed_out:
            return EXIT_TIMEOUT
        if self.event.is_set():
            return self.interrupt_code
        return None

    def message(self) -> str:
        """What the job log says when JobCancelled unwound the job."""
        if self.timed_out:
            return "job timed out"
        return "job cancelled" + (" (SIGINT)" if self.interrupt_code == EXIT_INTERRUPTED else " (SIGTERM)")

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """While active, a signal outside the steps unwinds the main thread (JobCancelled) at once."""
        self._interruptible = True
        try:
            yield
        finally:
            # From here on (ON_ERROR, CLEANUP) a SIGTERM only cancels; it must not unwind the cleanup.
            self._interruptible = False

    @contextmanager
    def steps(self, scheduler: Any) -> Iterator[None]:
        """The step phase: `scheduler` is cancelled from now on (at once if the job already is), and the
        handlers leave the main thread to the scheduler instead of raising."""
        self._scheduler = scheduler
        if self.event.is_set():
            scheduler.cancel()
        self._in_steps = True
        try:
            yield
        finally:
            self._in_steps = False

    # -- signals -----------------------------------------------------------------------------------------

    @contextmanager
    def handlers(self) -> Iterator[None]:
        """SIGTERM and SIGINT handled by this job while active (main thread only; the previous ones come back)."""
        previous = None
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            # Ctrl-C on a laptop cancels like the worker's SIGTERM (steps stopped, CLEANUP run), exit 130.
            previous = (signal.signal(signal.SIGTERM, self.on_signal), signal.signal(signal.SIGINT, self.on_signal))
        try:
            yield
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous[0])
                signal.signal(signal.SIGINT, previous[1])

    def on_signal(self, signum: int, frame: Any) -> None:
        """The SIGTERM/SIGINT handler (see the module docstring)."""
        first = not self.event.is_set()
        if first and signum == signal.SIGINT:
            self.interrupt_code = EXIT_INTERRUPTED
        if not first and signum == signal.SIGINT:
            # A second Ctrl-C: the running steps get SIGKILL now, not after the grace. (os.write: the log's
            # lock may be held by the code this handler interrupted.)
            os.write(2, b"runnerlib: interrupted again: killing the running steps now\n")
            if self._scheduler is not None:
                self._scheduler.cancel(kill=True)
            return
        self.cancel()
        if first and self._interruptible and not self._in_steps:
            # Outside the steps nothing polls the flag often enough; unwind to ON_ERROR / CLEANUP now.
            raise JobCancelled()

    # -- the job's timeout -------------------------------------------------------------------------------

    def start_timer(self, seconds: float) -> None:
        """Cancel the job as timed out after `seconds` (a daemon timer; `stop_timer()` ends it)."""
        self._timer = threading.Timer(seconds, self.on_timeout)
        self._timer.daemon = True
        self._timer.start()

    def stop_timer(self) -> None:
        """The job is over: its timeout no longer applies."""
        if self._timer is not None:
            self._timer.cancel()

    def on_timeout(self) -> None:
        """The job's timeout: cancel as SIGTERM does, the running steps reported as timed out."""
        self.timed_out = True
        self.event.set()
        if self._scheduler is not None:
            self._scheduler.cancel(timed_out=True)
        if self._interruptible and not self._in_steps and self.handle_signals \
                and threading.current_thread() is not threading.main_thread():
            # Interrupt the main thread (in a plugin or source preparation) the way SIGTERM does.
            if signal.getsignal(signal.SIGTERM) == self.on_signal:
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
