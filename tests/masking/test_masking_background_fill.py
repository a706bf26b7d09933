"""A background batch (`runnerlib mask`'s secrets): the forms are computed and compiled in a thread while the input
is awaited (Masker.fill_in_background). Nothing is ever scanned with a set that is still being computed, another
thread's add lands after it, and a failure stops every write rather than letting one out half-masked."""

from __future__ import annotations

import threading

import pytest

from runnerlib.security import registry as registry_module
from runnerlib.security.masker import MaskingFailed
from runnerlib.security.registry import SecretRegistry
from runnerlib.security.variants import secret_forms

SECRET = "background-fill-secret-0042"
OTHER = "another-thread-secret-0043"


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """secret_forms blocks until the event is set: the fill is caught in the middle."""
    release = threading.Event()

    def slow(value: bytes, *, min_length: int = 4) -> tuple[list[bytes], list[bytes]]:
        assert release.wait(60)
        return secret_forms(value, min_length=min_length)

    monkeypatch.setattr(registry_module, "secret_forms", slow)
    return release


def test_the_block_returns_before_the_forms_are_computed_and_the_first_write_waits(held: threading.Event) -> None:
    """The batch ends at once (an empty input then exits without computing a form); the first write blocks until
    the forms are computed and compiled, then masks. Control: a batch that is not in the background does not
    return while the forms are held."""
    registry = SecretRegistry()
    with registry.batch(background=True):
        registry.add(SECRET, source="test")
    out: list[bytes] = []
    stream = registry.stream(out.append)
    writer = threading.Thread(target=lambda: (stream.write(f"a {SECRET} b\n".encode()), stream.close()))
    writer.start()
    writer.join(0.3)
    assert writer.is_alive() and out == []  # waiting for the fill, nothing written unmasked
    held.set()
    writer.join(60)
    assert b"".join(out) == b"a *** b\n"

    held.clear()
    control = SecretRegistry()
    ended = threading.Event()

    def foreground() -> None:
        with control.batch():
            control.add(SECRET, source="test")
        ended.set()

    thread = threading.Thread(target=foreground)
    thread.start()
    assert not ended.wait(0.3)
    held.set()
    thread.join(60)
    assert ended.is_set()


def test_another_threads_add_during_the_fill_is_masked_when_it_returns(held: threading.Event) -> None:
    """An add from another thread while the fill runs waits for it, then is live on return like any add."""
    registry = SecretRegistry()
    with registry.batch(background=True):
        registry.add(SECRET, source="test")
    added = threading.Event()
    thread = threading.Thread(target=lambda: (registry.add(OTHER, source="test"), added.set()))
    thread.start()
    assert not added.wait(0.3)
    held.set()
    assert added.wait(60)
    assert registry.mask_text(f"{SECRET} {OTHER}") == "*** ***"


def test_a_fill_that_fails_stops_every_write_without_naming_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Computing a secret's forms raises (the message quotes the value): writes and mask() raise an error that
    names the exception type only; nothing is written. Control: the same batch without the failure masks."""
    def broken(value: bytes, *, min_length: int = 4) -> tuple[list[bytes], list[bytes]]:
        raise ValueError(f"cannot encode {value!r}")

    monkeypatch.setattr(registry_module, "secret_forms", broken)
    registry = SecretRegistry()
    with registry.batch(background=True):
        registry.add(SECRET, source="test")
    out: list[bytes] = []
    stream = registry.stream(out.append)
    with pytest.raises(MaskingFailed, match="ValueError") as raised:
        stream.write(f"a {SECRET} b\n".encode())
    assert SECRET not in str(raised.value) and out == []
    with pytest.raises(MaskingFailed):
        registry.mask(SECRET.encode())

    monkeypatch.setattr(registry_module, "secret_forms", secret_forms)
    control = SecretRegistry()
    with control.batch(background=True):
        control.add(SECRET, source="test")
    assert control.mask_text(f"a {SECRET} b") == "a *** b"
