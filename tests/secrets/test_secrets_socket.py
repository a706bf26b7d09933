"""The registration socket, attacked: bad frames, slow clients, floods, stolen tokens, foreign uids.

Every refusal test has a twin showing the same request succeeds when the protection allows it.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import stat
import struct
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from secrets_testlib import (
    IS_ROOT,
    PYTHON,
    as_nobody_through_a_link,
    assert_no_fragment,
    frame,
    new_secret,
    raw_request,
)

from runnerlib.secrets_client import RegistrationError, register_secret, register_secrets
from runnerlib.security.registry import SecretRegistry
from runnerlib.security.secret_socket import FrameError, SecretSocketServer, check_register, parse_request


def test_existing_wire_format_with_the_token(server, registry):
    value = new_secret()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(server.path)
        sock.sendall(frame({"action": "register", "secrets": [value], "token": server.token}))
        reply = sock.makefile("rb").readline()
    assert reply == b'{"status": "ok", "registered": 1}\n'
    assert value.encode() in registry.secrets()
    assert registry.mask_text(f"x{value}x") == "x***x"


def test_environment_directory_and_cleanup(registry):
    server = SecretSocketServer(registry).start()
    try:
        env = server.env()
        assert env == {"REACTORCIDE_SECRETS_SOCKET": server.path, "REACTORCIDE_SECRETS_TOKEN": server.token}
        directory = os.path.dirname(server.path)
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert os.stat(directory).st_uid == os.getuid()
        assert stat.S_ISSOCK(os.stat(server.path).st_mode)
        assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
        assert len(server.token) >= 43  # token_urlsafe(32)
        assert server.token.encode() in registry.secrets()  # printing the token is masked too
        assert server.token not in repr(server)
    finally:
        server.stop()
    assert not os.path.exists(directory)
    server.stop()  # idempotent


def test_tokens_differ_per_server(registry):
    with SecretSocketServer(registry) as a, SecretSocketServer(registry) as b:
        assert a.token != b.token and a.path != b.path


def test_python_client(server, registry):
    values = [new_secret() for _ in range(3)]
    assert register_secrets(values, socket_path=server.path, token=server.token) == 3
    assert register_secret(new_secret(), socket_path=server.path, token=server.token) == 1
    assert set(v.encode() for v in values) <= set(registry.secrets())


def test_python_client_reads_the_environment(server, registry, monkeypatch):
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    value = new_secret()
    assert register_secret(value) == 1
    assert value.encode() in registry.secrets()


def test_short_values_are_counted_as_not_registered(server, registry):
    assert register_secrets(["ab", new_secret()], socket_path=server.path, token=server.token) == 1


# --- authentication ------------------------------------------------------------------------------------------


def test_missing_token_refused(server, registry):
    value = new_secret()
    reply = raw_request(server.path, frame({"action": "register", "secrets": [value]}))
    assert reply["status"] == "error" and "authentication required" in reply["error"]
    assert value.encode() not in registry.secrets()


def test_without_require_token_a_legacy_client_is_accepted(registry):
    """The control of test_missing_token_refused: the same frame passes when tokens are not required."""
    value = new_secret()
    with SecretSocketServer(registry, require_token=False) as server:
        reply = raw_request(server.path, frame({"action": "register", "secrets": [value]}))
        assert reply == {"status": "ok", "registered": 1}
        # a wrong token is still refused
        bad = raw_request(server.path, frame({"action": "register", "secrets": [value], "token": "x"}))
        assert bad["status"] == "error"


@pytest.mark.parametrize("token", ["wrong", "", 12345, None, ["t"]])
def test_wrong_token_refused_and_client_error_never_holds_the_value(server, registry, token):
    value = new_secret()
    message = {"action": "register", "secrets": [value], "token": token}
    reply = raw_request(server.path, frame(message))
    assert reply["status"] == "error"
    assert value.encode() not in registry.secrets()
    assert value not in json.dumps(reply)
    if isinstance(token, str):
        with pytest.raises(RegistrationError) as info:
            register_secret(value, socket_path=server.path, token=token or "nope")
        assert value not in str(info.value) and server.token not in str(info.value)


def test_token_prefix_is_not_enough(server, registry):
    value = new_secret()
    reply = raw_request(server.path, frame({"action": "register", "secrets": [value], "token": server.token[:-1]}))
    assert reply["status"] == "error" and value.encode() not in registry.secrets()


def test_uid_not_allowed_refused_even_with_the_token(registry):
    """SO_PEERCRED: our own uid is not in allowed_uids here, so the valid token does not help."""
    value = new_secret()
    with SecretSocketServer(registry, allowed_uids={os.getuid() + 12345}) as server:
        reply = raw_request(server.path, frame({"action": "register", "secrets": [value], "token": server.token}))
        assert reply["status"] == "error" and f"uid {os.getuid()} is not allowed" in reply["error"]
        assert value.encode() not in registry.secrets()
        with pytest.raises(RegistrationError, match="not allowed"):
            register_secret(value, socket_path=server.path, token=server.token)


def _attacker(server_path: str, token: str, value: str, linkdir: str) -> subprocess.CompletedProcess:
    """Register `value` as uid 65534 with the stolen token, past the 0700 directory."""
    return as_nobody_through_a_link(server_path, linkdir,
                                    "c.register_secret(sys.argv[1], socket_path=link, token=sys.argv[2])",
                                    value, token)


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="needs root to run a process as uid 65534")
def test_attacker_uid_with_stolen_token_refused(registry, shared_dir):
    value = new_secret()
    with SecretSocketServer(registry, allowed_uids={0}, parent_dir=shared_dir) as server:
        proc = _attacker(server.path, server.token, value, shared_dir)
        assert proc.returncode == 3, proc.stderr
        assert b"uid 65534 is not allowed" in proc.stdout
        assert value.encode() not in registry.secrets()
        assert server.stats["refused_uid"] == 1


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="needs root to run a process as uid 65534")
def test_same_request_from_an_allowed_uid_is_accepted(registry, shared_dir):
    """The control of the test above: allow 65534 and the very same attack registers the value."""
    value = new_secret()
    with SecretSocketServer(registry, allowed_uids={0, 65534}, parent_dir=shared_dir) as server:
        proc = _attacker(server.path, server.token, value, shared_dir)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert value.encode() in registry.secrets()


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="needs root to run a process as uid 65534")
def test_other_uid_cannot_even_reach_the_socket(registry, shared_dir):
    """The directory is the first fence: uid 65534 cannot traverse the runner's 0700 directory."""
    value = new_secret()
    with SecretSocketServer(registry, allowed_uids={0, 65534}, parent_dir=shared_dir) as server:
        script = "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])"
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PYTHON, "-c",
                               script, server.path], capture_output=True, timeout=60, cwd="/")
        assert proc.returncode != 0 and b"PermissionError" in proc.stderr
        assert value.encode() not in registry.secrets()


# --- bad input: a clear JSON error, and the server keeps serving -------------------------------------------


def _body(raw: bytes) -> bytes:
    return struct.pack(">I", len(raw)) + raw


BAD_FRAMES = {
    "oversized length": (struct.pack(">I", 2**31), "exceeds the limit"),
    "length just over the cap": (struct.pack(">I", 1024 * 1024 + 1), "exceeds the limit"),
    "truncated header": (b"\x00\x00", "expected a 4-byte length, got 2"),
    "empty connection": (b"", "expected a 4-byte length, got 0"),
    "truncated body": (struct.pack(">I", 100) + b'{"action"', "expected 100 bytes, got 9"),
    "invalid utf-8": (_body(b'{"action": "register", "secrets": ["\xff\xfe"]}'), "not valid UTF-8"),
    "invalid json": (_body(b'{"action": register}'), "not valid JSON"),
    "empty body": (_body(b""), "not valid JSON"),
    "deep nesting": (_body(b"[" * 100000 + b"]" * 100000), "JSON"),
    "not an object": (_body(b'["register"]'), "must be a JSON object"),
    "unknown action": (_body(b'{"action": "unregister", "secrets": []}'), "unknown or missing"),
    "missing action": (_body(b'{"secrets": []}'), "unknown or missing"),
    "secrets not a list": (_body(b'{"action": "register", "secrets": "abc"}'), '"secrets" must be a list'),
    "secrets item not a string": (_body(b'{"action": "register", "secrets": ["abcdef", 5]}'), '"secrets"[1]'),
    "secrets null": (_body(b'{"action": "register", "secrets": null}'), '"secrets" must be a list'),
    "lone surrogate": (_body(b'{"action": "register", "secrets": ["abc\\ud800def"]}'), "unpaired surrogate"),
    "too many secrets": (_body(json.dumps({"action": "register", "secrets": ["abcdef"] * 10001}).encode()),
                         "at most 10000"),
}


@pytest.mark.parametrize("name", sorted(BAD_FRAMES))
def test_bad_frames_get_a_clear_error_and_the_server_survives(server, registry, name):
    data, expected = BAD_FRAMES[name]
    # authenticate the JSON ones so the check that fires is the one under test
    if len(data) > 4 and data[4:5] == b"{" and name not in ("invalid json", "invalid utf-8", "truncated body"):
        message = json.loads(data[4:])
        message["token"] = server.token
        data = frame(message)
    reply = raw_request(server.path, data)
    assert reply["status"] == "error"
    assert expected in reply["error"], reply
    # still serving
    value = new_secret()
    assert register_secret(value, socket_path=server.path, token=server.token) == 1


def test_errors_never_echo_the_request(server, registry):
    value = new_secret()
    for data in (_body(f'{{"action": "register", "secrets": ["{value}"'.encode()),
                 _body(f'{{"action": "{value}", "secrets": [], "token": "{server.token}"}}'.encode()),
                 _body(f'{{"action": "register", "secrets": [["{value}"]], "token": "{server.token}"}}'.encode())):
        reply = raw_request(server.path, data)
        assert reply["status"] == "error"
        assert_no_fragment(json.dumps(reply).encode(), value)


def test_silent_client_times_out_and_does_not_stall_others(registry):
    with SecretSocketServer(registry, timeout=1.0) as server:
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        silent.connect(server.path)
        half = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        half.connect(server.path)
        half.sendall(struct.pack(">I", 1000) + b'{"act')  # slowloris: promises more, sends nothing
        try:
            # others are served while those two hang (each of these returns well before the 1 s deadline
            # would matter; if the server were serial they would wait forever, not fail on timing)
            for _ in range(5):
                assert register_secret(new_secret(), socket_path=server.path, token=server.token) == 1
            for sock in (silent, half):
                sock.settimeout(30)
                reply = json.loads(sock.makefile("rb").readline())
                assert reply["status"] == "error" and "timed out" in reply["error"]
        finally:
            silent.close()
            half.close()
        assert server.stats["timeouts"] == 2


def test_byte_by_byte_client_is_served(server, registry):
    value = new_secret()
    data = frame({"action": "register", "secrets": [value], "token": server.token})
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(server.path)
        for i in range(len(data)):
            sock.send(data[i : i + 1])
        reply = json.loads(sock.makefile("rb").readline())
    assert reply == {"status": "ok", "registered": 1}


def test_client_that_vanishes_before_the_reply(server, registry):
    for _ in range(20):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(server.path)
            sock.sendall(frame({"action": "register", "secrets": [new_secret()], "token": server.token}))
    assert register_secret(new_secret(), socket_path=server.path, token=server.token) == 1


def _raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {wanted}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def test_thousands_of_concurrent_connections(registry):
    """2,000 clients connected at once (4,000 descriptors in this process), all answered."""
    count = 2000
    _raise_nofile(2 * count + 200)
    with SecretSocketServer(registry, timeout=60.0) as server:
        socks = []
        try:
            values = [new_secret() for _ in range(count)]
            for _ in range(count):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(60)
                sock.connect(server.path)
                socks.append(sock)
            for sock, value in zip(socks, values, strict=True):
                sock.sendall(frame({"action": "register", "secrets": [value], "token": server.token}))
            replies = [json.loads(sock.makefile("rb").readline()) for sock in socks]
        finally:
            for sock in socks:
                sock.close()
        assert all(r == {"status": "ok", "registered": 1} for r in replies)
        assert set(v.encode() for v in values) <= set(registry.secrets())


def test_connection_cap_queues_rather_than_refuses(registry):
    with SecretSocketServer(registry, max_connections=2, timeout=30.0) as server:
        held = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
        for sock in held:
            sock.connect(server.path)
        result: list[int] = []
        waiter = threading.Thread(target=lambda: result.append(
            register_secret(new_secret(), socket_path=server.path, token=server.token)))
        waiter.start()
        for sock in held:  # finishing the two held connections lets the third in
            sock.sendall(frame({"action": "register", "secrets": [], "token": server.token}))
            sock.makefile("rb").readline()
            sock.close()
        waiter.join(60)
        assert result == [1]


# --- the reply comes after the masking -----------------------------------------------------------------------


class GatedRegistry:
    """Wraps the real registry; add() waits for a gate, so the test can see what happens meanwhile."""

    def __init__(self, inner):
        self.inner = inner
        self.entered = threading.Event()
        self.gate = threading.Event()

    def add(self, value, *, source):
        if source.startswith("socket("):
            self.entered.set()
            assert self.gate.wait(30)
        return self.inner.add(value, source=source)


def test_no_reply_before_registry_add_returns(registry):
    gated = GatedRegistry(registry)
    value = new_secret()
    with SecretSocketServer(gated) as server:
        done = threading.Event()
        thread = threading.Thread(target=lambda: (register_secret(value, socket_path=server.path,
                                                                   token=server.token), done.set()))
        thread.start()
        assert gated.entered.wait(30)
        time.sleep(0.2)  # had the reply gone out before add(), the client would be done by now
        assert not done.is_set()
        # meanwhile the loop still serves: a bad request gets its answer while the registry is busy
        reply = raw_request(server.path, _body(b"not json"))
        assert reply["status"] == "error" and "not valid JSON" in reply["error"]
        assert not done.is_set()
        gated.gate.set()
        thread.join(30)
        assert done.is_set()


def test_registry_failure_is_an_error_reply_not_a_crash(registry):
    class Broken:
        def add(self, value, *, source):
            if source.startswith("socket("):
                raise MemoryError
            return True

    with SecretSocketServer(Broken()) as server:
        with pytest.raises(RegistrationError, match="internal error"):
            register_secret(new_secret(), socket_path=server.path, token=server.token)
        with pytest.raises(RegistrationError, match="internal error"):
            register_secret(new_secret(), socket_path=server.path, token=server.token)


CLIENT = """
import sys, runnerlib
value = sys.stdin.readline().strip()
runnerlib.register_secret(value)
sys.stdout.write("secret is " + value + "\\n")
sys.stdout.flush()
"""


def _run_child_through_stream(registry, env: dict, value: str, register: bool) -> bytes:
    """A child process prints `value` (after registering it, if `register`); its stdout goes through a live
    MaskedStream of the registry as it arrives, as a step's output does."""
    out: list[bytes] = []
    stream = registry.stream(out.append)
    script = CLIENT if register else CLIENT.replace("runnerlib.register_secret(value)", "")
    proc = subprocess.Popen([PYTHON, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, **env})
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(value.encode() + b"\n")
    proc.stdin.close()
    while chunk := os.read(proc.stdout.fileno(), 7):  # small reads: the bytes go through as they come
        stream.write(chunk)
    stream.close()
    assert proc.wait(60) == 0
    return b"".join(out)


def test_child_printing_right_after_the_reply_is_masked_every_time(registry):
    with SecretSocketServer(registry) as server:
        for _ in range(15):
            value = new_secret()
            output = _run_child_through_stream(registry, server.env(), value, register=True)
            assert output == b"secret is ***\n"
            assert_no_fragment(output, value)


def test_child_that_does_not_register_leaks(registry):
    """The control: the same child without registering prints its secret in clear, so the test above can fail."""
    with SecretSocketServer(registry) as server:
        value = new_secret()
        output = _run_child_through_stream(registry, server.env(), value, register=False)
        assert value.encode() in output


def test_secrets_add_command(registry):
    """`runnerlib secrets add`: one value per line, and --multiline for a PEM-style value."""
    pem = "-----BEGIN KEY-----\n" + "\n".join(new_secret() for _ in range(3)) + "\n-----END KEY-----\n"
    a, b = new_secret(), new_secret()
    with SecretSocketServer(registry) as server:
        env = {**os.environ, **server.env()}
        proc = subprocess.run([PYTHON, "-m", "runnerlib.cli", "secrets", "add"], input=f"{a}\n\n{b}\r\n".encode(),
                              env=env, capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert b"registered 2 of 2" in proc.stderr
        proc = subprocess.run([PYTHON, "-m", "runnerlib.cli", "secrets", "add", "--multiline"],
                              input=pem.encode(), env=env, capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    assert {a.encode(), b.encode()} <= set(registry.secrets())
    assert pem.rstrip("\n").encode() in registry.secrets()
    masked = registry.mask(pem.encode())
    for line in pem.splitlines()[1:-1]:
        assert line.encode() not in masked


def test_secrets_add_without_socket_is_a_clear_error():
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_SECRETS")}
    value = new_secret()
    proc = subprocess.run([PYTHON, "-m", "runnerlib.cli", "secrets", "add"], input=value.encode(), env=env,
                          capture_output=True, timeout=60)
    assert proc.returncode != 0
    assert b"REACTORCIDE_SECRETS_SOCKET is not set" in proc.stderr
    assert value.encode() not in proc.stderr + proc.stdout


def test_client_errors_name_no_value(tmp_path):
    value = new_secret()
    with pytest.raises(RegistrationError) as info:
        register_secret(value, socket_path=str(tmp_path / "nothing.sock"), token="t")
    assert "cannot connect" in str(info.value) and value not in str(info.value)
    # a server that answers garbage
    path = str(tmp_path / "bad.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def answer():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"not json\n")
        conn.close()

    thread = threading.Thread(target=answer)
    thread.start()
    with pytest.raises(RegistrationError, match="not JSON") as info:
        register_secret(value, socket_path=path, token="t")
    assert value not in str(info.value)
    thread.join()
    listener.close()


def register_from_threads(server: SecretSocketServer, count: int, **options) -> list[str]:
    """`count` clients, each in its own thread, register one new secret at the same time.

    Returns the errors of those that failed (`options` go to register_secret, e.g. timeout)."""
    failures: list[str] = []

    def client():
        try:
            register_secret(new_secret(), socket_path=server.path, token=server.token, **options)
        except RegistrationError as exc:
            failures.append(str(exc))

    clients = [threading.Thread(target=client) for _ in range(count)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(120)
    return failures


def test_registrations_while_streams_open_and_close(registry):
    """Steps start and end (streams open and close) while secrets arrive: no registration may fail.

    Regression: the registry listed its live streams without its lock, and a stream opened meanwhile made
    add() raise "Set changed size during iteration", which the server turned into an error reply.
    """
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            registry.stream(lambda b: None).close()

    kept = [registry.stream(lambda b: None) for _ in range(1000)]  # a long list makes the race window wide
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so the race shows up in a short test
    churners = [threading.Thread(target=churn) for _ in range(3)]
    for t in churners:
        t.start()
    try:
        with SecretSocketServer(registry, timeout=60.0) as server:
            failures = register_from_threads(server, 200)
    finally:
        stop.set()
        for t in churners:
            t.join()
        sys.setswitchinterval(interval)
        for stream in kept:
            stream.close()
    assert failures == []


def test_batched_requests_get_their_own_counts(registry):
    """Concurrent requests are registered in one update; each reply still counts only its own values."""
    with SecretSocketServer(registry, timeout=60.0) as server:
        results: dict[int, int] = {}
        expected: dict[int, int] = {}
        requests: dict[int, list[str]] = {}
        for i in range(300):
            values = [new_secret() for _ in range(i % 3)] + ["ab"] * (i % 2)  # "ab" is too short: refused
            requests[i] = values
            expected[i] = i % 3

        def client(i):
            results[i] = register_secrets(requests[i] or ["xy"], socket_path=server.path, token=server.token)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(300)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert results == expected


def test_deep_parent_directory_falls_back_to_the_temp_dir(registry, tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    with SecretSocketServer(registry, parent_dir=deep) as server:
        assert len(server.path.encode()) <= 107
        assert register_secret(new_secret(), socket_path=server.path, token=server.token) == 1


def test_client_refuses_values_it_cannot_send(server):
    with pytest.raises(RegistrationError, match="secret #1 has no UTF-8 form") as info:
        register_secrets(["fine-value", "bad\ud800value"], socket_path=server.path, token=server.token)
    assert "bad" not in str(info.value)
    with pytest.raises(RegistrationError, match="secret #0 is not valid UTF-8"):
        register_secrets([b"\xff\xfe-bytes"], socket_path=server.path, token=server.token)
    with pytest.raises(RegistrationError, match="must be str or bytes"):
        register_secrets([12345], socket_path=server.path, token=server.token)
    assert register_secrets([], socket_path="/nonexistent") == 0


def test_many_silent_clients_do_not_hold_up_the_others(registry):
    """500 connections that never send a byte are open while 500 clients register: all 500 are answered,
    long before the silent ones reach their 60 s deadline."""
    _raise_nofile(2 * 1000 + 200)
    with SecretSocketServer(registry, timeout=60.0) as server:
        silent = []
        try:
            for _ in range(500):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(server.path)
                silent.append(sock)
            assert register_from_threads(server, 500, timeout=50) == []
            assert server.stats["requests_ok"] == 500 and server.stats["timeouts"] == 0
        finally:
            for sock in silent:
                sock.close()


# --- property-based: the request parser, and the live round trip ---------------------------------------------

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                     max_leaves=12)


@given(st.one_of(st.binary(max_size=200),
                 _json.map(lambda v: json.dumps(v).encode()),
                 st.fixed_dictionaries({"action": _json | st.just("register"),
                                        "secrets": _json | st.lists(st.text(max_size=10), max_size=4)})
                 .map(lambda v: json.dumps(v).encode())))
def test_parser_accepts_exactly_register_with_a_list_of_strings(body):
    try:
        values = check_register(parse_request(body))
    except FrameError as exc:
        assert str(exc)
        return
    message = json.loads(body)
    assert message["action"] == "register" and values == message["secrets"]
    assert all(isinstance(v, str) for v in values)


@settings(max_examples=40)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",)), min_size=4, max_size=30)
                .filter(lambda v: len(v.encode()) >= 4 and v.strip()), min_size=1, max_size=5))
def test_any_text_round_trips_through_a_live_server(values):
    registry = SecretRegistry()
    with SecretSocketServer(registry) as server:
        assert register_secrets(values, socket_path=server.path, token=server.token) == len(values)
    assert {v.encode() for v in values} <= set(registry.secrets())
