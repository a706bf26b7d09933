"""`runnerlib mask` end to end, in a real subprocess: sources of secrets, options, and streaming."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time

import pytest

MASK = [sys.executable, "-m", "runnerlib.cli", "mask"]


def run(args: list[str], stdin: bytes, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(MASK + args, input=stdin, env={**base, **(env or {})}, capture_output=True,
                          timeout=120)


def test_secret_env_and_default_names() -> None:
    env = {"MYVAR": "plain-named-value", "NPM_TOKEN": "npm_abcdefghijkl", "OTHER": "not-a-secret"}
    text = b"a plain-named-value b npm_abcdefghijkl c not-a-secret d " + base64.b64encode(b"npm_abcdefghijkl")
    p = run(["--secret-env", "MYVAR"], text, env)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"a *** b *** c not-a-secret d ***"
    # Protection off: without --secret-env, MYVAR's value is not a secret.
    assert b"plain-named-value" in run([], text, env).stdout


def test_secrets_file_min_length_and_replacement(tmp_path: pytest.TempPathFactory) -> None:
    f = tmp_path / "secrets.env"  # type: ignore[operator]
    f.write_text("DB=db-pass-1234\nSHORT=abcde\n")
    p = run(["--secrets-file", str(f), "--min-length", "6", "--replacement", "[MASKED]"],
            b"db-pass-1234 abcde\n")
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"[MASKED] abcde\n"
    assert b"SHORT" in p.stderr and b"abcde" not in p.stderr  # the refusal names the source, not the value


def test_missing_secrets_file_is_one_clear_error(tmp_path: pytest.TempPathFactory) -> None:
    missing = str(tmp_path / "nope.env")  # type: ignore[operator]
    p = run(["--secrets-file", missing], b"x")
    assert p.returncode != 0 and p.stdout == b""
    assert missing.encode() in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_binary_and_invalid_utf8_pass_through() -> None:
    data = bytes(range(256)) * 64 + b"\xc3\x28 bin-secret-x \x00"
    p = run(["--secret-env", "S"], data, {"S": "bin-secret-x"})
    assert p.stdout == data.replace(b"bin-secret-x", b"***")


def test_streams_like_tail_f() -> None:
    # The filter must show each line as soon as it arrives, long before stdin ends (as `tail -f | ...`).
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "API_TOKEN": "tok-tok-tok-1234"}
    proc = subprocess.Popen(MASK + ["--idle-flush", "0.05"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    assert proc.stdin and proc.stdout
    got: list[bytes] = []
    line_seen = threading.Event()
    prompt_seen = threading.Event()

    def reader() -> None:
        while True:
            chunk = os.read(proc.stdout.fileno(), 4096)  # type: ignore[union-attr]
            if not chunk:
                return
            got.append(chunk)
            joined = b"".join(got)
            if b"\n" in joined:
                line_seen.set()
            if joined.endswith(b"tok"):
                prompt_seen.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        proc.stdin.write(b"step 1 uses tok-tok-tok-1234\n")
        proc.stdin.flush()
        assert line_seen.wait(60), "a complete line was not shown while the input stayed open"
        assert b"".join(got) == b"step 1 uses ***\n"
        proc.stdin.write(b"tok")  # could be the start of the token (3 bytes): held, then shown when input idles
        proc.stdin.flush()
        assert prompt_seen.wait(60), "held-back bytes were not flushed on idle"
        # A token arriving in two pieces with a pause between: the idle flush keeps the 8-byte fragment.
        proc.stdin.write(b"\nuses tok-tok-")
        proc.stdin.flush()
        time.sleep(0.5)  # ten idle periods; if the fragment were flushed, the final comparison shows it
        proc.stdin.write(b"tok-1234\n")
        proc.stdin.flush()
    finally:
        proc.stdin.close()
        proc.wait(60)
        t.join(60)
    assert proc.returncode == 0
    assert b"".join(got) == b"step 1 uses ***\ntok\nuses ***\n"


def test_broken_pipe_is_quiet() -> None:
    p = subprocess.run(" ".join([*MASK]) + " < /dev/zero | head -c 10 > /dev/null", shell=True,
                       capture_output=True, timeout=120, executable="/bin/bash")
    assert b"Traceback" not in p.stderr


def test_large_secret_set_large_input_masks_and_exits(tmp_path: pytest.TempPathFactory) -> None:
    """Past matcher.SPLIT_MIN_KEYS patterns the set compiles as keys in two databases, and 1 MiB reads scan them in
    two threads: every secret is masked, at both ends of a read, and the command exits (its quick exit joins every
    thread that is not a daemon: a non-daemon scan helper hung it)."""
    import random
    import string

    rnd = random.Random(12)
    secrets = ["".join(rnd.choices(string.ascii_letters + string.digits, k=32)) for _ in range(400)]
    f = tmp_path / "secrets.env"  # type: ignore[operator]
    f.write_text("".join(f"S{i}={v}\n" for i, v in enumerate(secrets)))
    filler = b"2026-12-05T08:00:00Z Building CXX object src/file.cpp.o 0123456789abcdef\n" * 20000
    data = secrets[0].encode() + b"\n" + filler + b" ".join(s.encode() for s in secrets[::7]) + b"\n" + filler
    data += secrets[-1].encode()
    p = run(["--secrets-file", str(f)], data)
    assert p.returncode == 0, p.stderr
    assert_gone = [s for s in secrets if s.encode() in p.stdout]
    assert not assert_gone
    assert len(p.stdout) > len(data) - 400 * 32 and p.stdout.startswith(b"***\n") and p.stdout.endswith(b"***")
    # Control: without the secrets file the values pass through.
    assert secrets[7].encode() in run([], data).stdout
