"""MaskedStream: what is held back, flush/close/idle, the cap, live additions, threads, hostile bytes."""

from __future__ import annotations

import os
import threading
import time

import pytest

from runnerlib.security.registry import SecretRegistry
from runnerlib.security.stream import pump, write_all
from runnerlib.testing import assert_no_fragment, reference_mask, stream_through

SECRET = b"hello-secret-42"


@pytest.fixture
def registry() -> SecretRegistry:
    r = SecretRegistry()
    r.add(SECRET, source="test")
    return r


def collect(registry: SecretRegistry, **kw: object) -> tuple[list[bytes], object]:
    out: list[bytes] = []
    return out, registry.stream(out.append, **kw)


def test_a_complete_line_is_emitted_at_once(registry: SecretRegistry) -> None:
    out, s = collect(registry)
    s.write(b"hello world\n")  # "hello" starts like the secret, but the line goes on
    assert b"".join(out) == b"hello world\n" and s.held == 0


def test_only_a_possible_secret_start_is_held(registry: SecretRegistry) -> None:
    out, s = collect(registry)
    s.write(b"login: hello-sec")
    assert b"".join(out) == b"login: " and s.held == len(b"hello-sec")
    s.write(b"ret-42 ok\n")
    assert b"".join(out) == b"login: *** ok\n" and s.held == 0


def test_flush_emits_pending_and_the_rest_is_still_masked(registry: SecretRegistry) -> None:
    out, s = collect(registry)
    s.write(b"x hello-se")
    s.flush()
    assert b"".join(out) == b"x hello-se" and s.held == 0
    s.write(b"cret-42 y")
    s.close()
    assert b"".join(out) == b"x hello-se*** y"


def test_close_emits_pending_and_refuses_writes(registry: SecretRegistry) -> None:
    out, s = collect(registry)
    with s:
        s.write(b"hello-s")
    assert b"".join(out) == b"hello-s"
    with pytest.raises(ValueError, match="closed"):
        s.write(b"x")
    s.close()  # idempotent


def test_flush_if_idle_is_the_idle_hook(registry: SecretRegistry) -> None:
    out, s = collect(registry)
    s.write(b"prompt hel")  # could be the start of the secret, but only 3 bytes of it: shown on idle
    assert not s.flush_if_idle(3600)
    assert s.flush_if_idle(0)
    assert b"".join(out) == b"prompt hel"


def test_idle_flusher_thread_shows_a_held_prompt(registry: SecretRegistry) -> None:
    out, s = collect(registry, idle_flush=0.05)
    s.write(b"Password for hel")
    deadline = time.monotonic() + 30  # a generous bound: the assertion is that it happens, not when
    while b"".join(out) != b"Password for hel" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert b"".join(out) == b"Password for hel"
    s.close()


def test_a_writer_stalling_mid_secret_leaks_no_fragment(registry: SecretRegistry) -> None:
    """The attack: the secret arrives in two writes with a pause between them (a slow pipe, a descheduled
    process). The idle flush must not show the first part: it is a fragment of the secret."""
    out, s = collect(registry)
    s.write(b"token: hello-se")
    assert not s.flush_if_idle(0)  # 8 bytes of the secret held: nothing to show yet
    s.write(b"cret-42\n")
    s.close()
    assert b"".join(out) == b"token: ***\n"
    assert_no_fragment(b"".join(out), [SECRET])
    # Protection off: a flush that emits everything held (what the idle flush used to do) leaks the part.
    out, s = collect(registry)
    s.write(b"token: hello-se")
    s.flush()
    s.write(b"cret-42\n")
    s.close()
    assert b"hello-se" in b"".join(out)


def test_add_takes_effect_in_a_live_stream_including_its_held_tail() -> None:
    r = SecretRegistry()
    r.add("other-secret", source="test")
    out, s = collect(r)
    s.write(b"a: other-sec")  # held: could be the start of "other-secret"
    r.add("other-secure-thing", source="late")
    s.write(b"ure-thing b: late-value-9\n")
    r.add("late-value-9", source="late")
    s.write(b"late-value-9\n")
    s.close()
    assert b"".join(out) == b"a: *** b: late-value-9\n***\n"


def test_add_returns_only_after_concurrent_writes_use_the_new_secret() -> None:
    r = SecretRegistry()
    r.add("warm-up-secret", source="test")
    out: list[bytes] = []
    lock = threading.Lock()

    def sink(b: bytes) -> None:
        with lock:
            out.append(b)

    s = r.stream(sink)
    value = b"rotating-value-1234"
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            s.write(b"line " + value + b"\n")

    def written(at_least: int, since: int = 0) -> None:
        # Waits for the writer rather than sleeping a fixed time: on a loaded machine 50 ms may pass without a write.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with lock:
                if len(out) - since >= at_least:
                    return
            time.sleep(0.005)
        raise AssertionError("the writer thread wrote nothing for 60 s")

    t = threading.Thread(target=writer)
    t.start()
    written(20)
    r.add(value, source="late")
    with lock:
        mark = len(out)
    written(20, since=mark)
    stop.set()
    t.join()
    s.close()
    with lock:
        after = b"".join(out[mark:])
    assert value not in after and b"line ***\n" in after
    assert value in b"".join(out[:mark])  # protection off: before add() the value did pass


def test_many_threads_streams_and_adds() -> None:
    r = SecretRegistry()
    secrets = [f"secret-number-{i:04d}-xyz".encode() for i in range(60)]
    outs: list[list[bytes]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def adder() -> None:
        for sec in secrets:
            r.add(sec, source="t")

    def writer(k: int) -> None:
        try:
            with r.stream(outs[k].append) as s:
                for i in range(300):
                    s.write(b"x" * (i % 7) + secrets[i % 10] + b"\n")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    r.add_many(secrets[:10], source="t")
    threads = [threading.Thread(target=adder)] + [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for out in outs:
        assert not any(sec in b"".join(out) for sec in secrets)


def test_hostile_bytes_pass_through(registry: SecretRegistry) -> None:
    text = (b"\x00\xff\xfe invalid utf-8 \xc3\x28 \x1b[31mred\x1b[0m " + SECRET + b"\x00" + SECRET[:5]
            + b"\x1b[1m" + SECRET + b"\r\n")
    assert stream_through(registry, [text[i:i + 3] for i in range(0, len(text), 3)]) == \
        reference_mask(text, registry.patterns(), line_starts=registry.line_starts())


def test_multi_megabyte_line_without_newline(registry: SecretRegistry) -> None:
    line = (b"A" * 3_000_001 + SECRET + b"B" * 2_000_000 + SECRET[:7]) * 2 + b"\n"
    chunks = [line[i:i + 1_048_573] for i in range(0, len(line), 1_048_573)]
    out = stream_through(registry, chunks)
    assert out == (b"A" * 3_000_001 + b"***" + b"B" * 2_000_000 + SECRET[:7]) * 2 + b"\n"
    assert out == registry.mask(line) == reference_mask(line, registry.patterns(), line_starts=registry.line_starts())


def test_one_byte_writes(registry: SecretRegistry) -> None:
    text = b"a hello-secret-42hello-secret-42 b hello-secret-4 c"
    assert stream_through(registry, [text[i:i + 1] for i in range(len(text))]) == b"a *** b hello-secret-4 c"


def test_pump_copies_a_pipe_and_masks(registry: SecretRegistry) -> None:
    r_in, w_in = os.pipe()
    r_out, w_out = os.pipe()
    os.write(w_in, b"one " + SECRET + b"\ntwo hello")
    os.close(w_in)
    pump(r_in, registry.stream(write_all(w_out)), idle_flush=0.01)
    os.close(w_out)
    assert os.read(r_out, 1000) == b"one ***\ntwo hello"
    os.close(r_in)
    os.close(r_out)
