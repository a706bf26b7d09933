"""execution/cancellation.py on its own: which exit code each way of stopping gives, each signal once, a second
Ctrl-C kills at once, and JobCancelled only while the job may be unwound (never in ON_ERROR / CLEANUP).
The same behaviour end to end, with real signals to a real `runnerlib` process: tests/test_exit_convention.py."""

from __future__ import annotations

import signal
import threading

import pytest

from runnerlib.execution.cancellation import Cancellation, JobCancelled


class FakeScheduler:
    def __init__(self) -> None:
        self.calls: list[dict[str, bool]] = []

    def cancel(self, **kw: bool) -> None:
        self.calls.append(kw)


def test_nothing_happened_no_code() -> None:
    stop = Cancellation()
    assert stop.code() is None and not stop.is_set()
    stop.check()  # does not raise


def test_sigterm_cancels_once_with_143() -> None:
    stop, scheduler = Cancellation(), FakeScheduler()
    with stop.steps(scheduler):
        stop.on_signal(signal.SIGTERM, None)
        stop.on_signal(signal.SIGTERM, None)
    # A second SIGTERM is no kill: the scheduler's cancel event is set once, so a step gets its SIGTERM once
    # (the scheduler's part of "once": test_exit_convention.py, with a real step).
    assert scheduler.calls and all(call == {} for call in scheduler.calls)
    assert stop.code() == 143 and stop.message() == "job cancelled (SIGTERM)"
    with pytest.raises(JobCancelled):
        stop.check()


def test_ctrl_c_130_and_a_second_one_kills_at_once(capfd: pytest.CaptureFixture[str]) -> None:
    stop, scheduler = Cancellation(), FakeScheduler()
    with stop.steps(scheduler):
        stop.on_signal(signal.SIGINT, None)
        assert scheduler.calls == [{}]
        stop.on_signal(signal.SIGINT, None)
    assert scheduler.calls == [{}, {"kill": True}]
    assert stop.code() == 130 and stop.message() == "job cancelled (SIGINT)"
    assert "interrupted again" in capfd.readouterr().err


def test_a_sigterm_after_ctrl_c_keeps_130() -> None:
    stop = Cancellation()
    stop.on_signal(signal.SIGINT, None)
    stop.on_signal(signal.SIGTERM, None)
    assert stop.code() == 130


def test_unwinds_only_while_interruptible_and_outside_the_steps() -> None:
    stop = Cancellation()
    with stop.interruptible(), pytest.raises(JobCancelled):
        stop.on_signal(signal.SIGTERM, None)  # a plugin or source preparation is running: unwind now
    # Inside the steps the scheduler stops them; the handler returns.
    stop = Cancellation()
    with stop.interruptible(), stop.steps(FakeScheduler()):
        stop.on_signal(signal.SIGTERM, None)
    # ON_ERROR / CLEANUP (after interruptible()): a signal only cancels, it never unwinds the cleanup.
    stop = Cancellation()
    stop.on_signal(signal.SIGTERM, None)
    assert stop.is_set()


def test_a_scheduler_attached_after_the_cancellation_is_cancelled_at_once() -> None:
    stop, scheduler = Cancellation(), FakeScheduler()
    stop.cancel()
    with stop.steps(scheduler):
        pass
    assert scheduler.calls == [{}]


def test_job_timeout_124_and_the_steps_told_why() -> None:
    stop, scheduler = Cancellation(), FakeScheduler()
    with stop.steps(scheduler):
        stop.on_timeout()
    assert scheduler.calls == [{"timed_out": True}]
    assert stop.code() == 124 and stop.message() == "job timed out"


def test_the_timer_fires_and_can_be_stopped() -> None:
    stop = Cancellation(handle_signals=False)
    stop.start_timer(0.01)
    assert stop.event.wait(30) and stop.timed_out
    idle = Cancellation(handle_signals=False)
    idle.start_timer(3600)
    idle.stop_timer()
    assert not idle.is_set()


def test_handlers_are_installed_and_restored() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    stop = Cancellation()
    with stop.handlers():
        assert signal.getsignal(signal.SIGTERM) == stop.on_signal
        assert signal.getsignal(signal.SIGINT) == stop.on_signal
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_no_handlers_when_told_not_to_or_off_the_main_thread() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with Cancellation(handle_signals=False).handlers():
        assert signal.getsignal(signal.SIGTERM) == before
    seen: list[object] = []

    def in_thread() -> None:
        with Cancellation().handlers():  # signal.signal would raise ValueError off the main thread
            seen.append(signal.getsignal(signal.SIGTERM))

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert seen == [before]
