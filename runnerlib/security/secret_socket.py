"""The authenticated secret registration socket: trusted job code registers secrets while the job runs.

Invariant: a secret is acknowledged only after `registry.add` returned, i.e. after every live output stream
masks it; so a client that prints the secret right after its reply sees it masked, every time.

Wire format (the existing one, plus a token; written down in docs/secrets.md):

    request  = 4-byte big-endian length N, then N bytes of UTF-8 JSON:
               {"action": "register", "secrets": ["...", ...], "token": "<REACTORCIDE_SECRETS_TOKEN>"}
               {"action": "mask", "text": "...", "token": "..."}      (or "texts": ["...", ...])
    reply    = one line of JSON then "\\n", then the server closes:
               {"status": "ok", "registered": N}            (N = values the registry accepted)
               {"status": "ok", "text": "<masked>"}         ("texts": [...] for "texts", in order)
               {"status": "error", "error": "<reason>"}     (never echoes a value)

"mask" returns text masked with every secret the runner knows (registered by any step, any source): trusted
steps use it before they write a payload another process may read (workflow/api.py). It is authenticated
exactly like "register": unauthenticated, it would be an oracle telling an attacker whether a guess is a
secret. A mask request is answered after the registrations read before it, so a value whose registration was
acknowledged is always masked.

One request per connection. A connection is refused (error reply, nothing registered) unless BOTH hold:
- the peer's uid (SO_PEERCRED, taken by the kernel at connect time, so it cannot be forged) is in
  `allowed_uids`; this check comes first, so a stolen token is useless from another uid;
- the "token" field equals the per-job token (hmac.compare_digest: constant time). An existing client keeps
  its frame and adds the one field; `require_token=False` accepts frames without a token from allowed uids.

Defence in depth: the socket lives in a fresh 0700 directory that only the runner's uid can enter, and the
socket file itself is 0600; both are removed by stop().

The server is one selectors loop in one thread: every socket is non-blocking, so a slow or silent client
costs a file descriptor until its deadline, never the attention of the loop. Registration runs in a second
thread, in batches: while the registry works on one batch the loop keeps reading the next requests. Frames are capped
(`max_frame`, 1 MiB), each connection has a deadline (`timeout`) for the whole request, and at most
`max_connections` are open at once (the rest wait in the kernel's listen backlog).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import hmac
import json
import logging
import os
import queue
import secrets as secrets_module
import selectors
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("runnerlib.secrets.socket")

SOCKET_VAR = "REACTORCIDE_SECRETS_SOCKET"
TOKEN_VAR = "REACTORCIDE_SECRETS_TOKEN"
SOCKET_NAME = "secrets.sock"
MAX_FRAME = 1024 * 1024
# One request may register this many values; more is a runaway client (each value costs automaton memory).
MAX_SECRETS_PER_REQUEST = 10_000
# One mask request carries at most this many bytes of text (UTF-8, all "texts" together): the reply holds as
# much again, and even with every character JSON-escaped the request stays within MAX_FRAME. It is also the
# kernel's limit on one argument or environment string (MAX_ARG_STRLEN), so no env value or command of a
# trigger that a job could actually receive is refused.
MAX_MASK_TEXT = 128 * 1024
MAX_MASK_TEXTS = 10_000
HEADER = struct.Struct(">I")
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
# After the reply, the server reads (and drops) what the client may still send until it closes, briefly:
# closing a Unix socket with unread data makes the peer's recv() fail with ECONNRESET, losing our reply.
DRAIN_SECONDS = 1.0
DRAIN_BYTES = 2 * MAX_FRAME


class Registry(Protocol):
    def add(self, value: str | bytes, *, source: str) -> bool: ...

    def mask_text(self, text: str) -> str: ...


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    uid: int
    pid: int
    deadline: float
    buf: bytearray = field(default_factory=bytearray)
    length: int | None = None
    out: bytes = b""
    phase: str = "read"  # read -> pending (registering or masking) -> write -> drain -> closed
    drained: int = 0
    action: str = "register"  # of the request once read: "register" or "mask"
    many: bool = True  # a mask request with "texts" (answered with "texts"), not "text"


class FrameError(ValueError):
    """A request the server refuses; the message is sent to the client as {"status": "error"}."""


def encode_frame(message: dict[str, Any]) -> bytes:
    """One request frame: the 4-byte big-endian length and the UTF-8 JSON body (used by the client too)."""
    body = json.dumps(message, ensure_ascii=False).encode("utf-8")
    return HEADER.pack(len(body)) + body


def parse_request(body: bytes) -> dict[str, Any]:
    """Decode and type-check a request body; raises FrameError with a message safe to send back.

    Messages never quote the body: a client that sent a secret in a malformed frame must not find it in a
    log or reply.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError(f"request is not valid UTF-8 (byte {exc.start})") from None
    try:
        message = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FrameError(f"request is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise FrameError("request is not valid JSON (nested too deeply)") from None
    if not isinstance(message, dict):
        raise FrameError(f"request must be a JSON object, not {type(message).__name__}")
    return message


def text_problem(value: object) -> str | None:
    """Why `value` cannot travel as a protocol string, or None if it can (used by the client too)."""
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON allows "\ud800"; such a string has no UTF-8 form, so it can never appear in output as text.
        return "has no UTF-8 form (an unpaired surrogate escape)"
    return None


def check_register(message: dict[str, Any]) -> list[str]:
    """The secrets of a well-formed register request; raises FrameError otherwise."""
    action = message.get("action")
    if action != "register":
        raise FrameError('unknown or missing "action": the actions are "register" and "mask"')
    values = message.get("secrets")
    if not isinstance(values, list):
        raise FrameError(f'"secrets" must be a list of strings, not {type(values).__name__}')
    if len(values) > MAX_SECRETS_PER_REQUEST:
        raise FrameError(f'"secrets" has {len(values)} values; at most {MAX_SECRETS_PER_REQUEST} per request')
    for index, value in enumerate(values):
        problem = text_problem(value)
        if problem:
            raise FrameError(f'"secrets"[{index}] {problem}')
    return values


def check_mask(message: dict[str, Any]) -> tuple[list[str], bool]:
    """The texts of a well-formed mask request and whether it used "texts" (a list); raises FrameError."""
    if message.get("action") != "mask":
        raise FrameError('unknown or missing "action": the actions are "register" and "mask"')
    if ("text" in message) == ("texts" in message):
        raise FrameError('a mask request needs exactly one of "text" (a string) or "texts" (a list of strings)')
    many = "texts" in message
    if many:
        texts = message["texts"]
        if not isinstance(texts, list):
            raise FrameError(f'"texts" must be a list of strings, not {type(texts).__name__}')
        if len(texts) > MAX_MASK_TEXTS:
            raise FrameError(f'"texts" has {len(texts)} values; at most {MAX_MASK_TEXTS} per request')
        names = [f'"texts"[{index}]' for index in range(len(texts))]
    else:
        texts, names = [message["text"]], ['"text"']
    size = 0
    for name, text in zip(names, texts, strict=True):
        problem = text_problem(text)
        if problem:
            raise FrameError(f"{name} {problem}")
        size += len(text.encode("utf-8"))
    if size > MAX_MASK_TEXT:
        raise FrameError(f"the text to mask is {size} bytes; at most {MAX_MASK_TEXT} bytes (UTF-8) per mask "
                         "request: split it")
    return texts, many


def check_request(message: dict[str, Any]) -> tuple[str, list[str], bool]:
    """(action, values, many) of a well-formed request: a register's secrets, or a mask's texts."""
    if message.get("action") == "mask":
        texts, many = check_mask(message)
        return "mask", texts, many
    return "register", check_register(message), True


def _reply(payload: dict[str, Any]) -> bytes:
    # Raw UTF-8 keeps a masked text's reply about its own size; a lone surrogate (a bytes secret masked
    # inside a character) has no UTF-8 form, so that reply falls back to \u escapes.
    try:
        return json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        return json.dumps(payload).encode("utf-8") + b"\n"


class SecretSocketServer:
    """Serves secret registrations for one job. Use as a context manager, or start() / stop().

    `allowed_uids` defaults to the runner's own uid. `parent_dir` is where the private directory is made
    (default: tempfile's). `timeout` is the deadline of one whole request. `token` exists for tests; by
    default it is `secrets.token_urlsafe(32)`, and it is itself added to the registry at start().

    Example::

        with SecretSocketServer(registry) as server:
            run_trusted_step(env={**env, **server.env()})
    """

    def __init__(
        self,
        registry: Registry,
        *,
        allowed_uids: Iterable[int] | None = None,
        require_token: bool = True,
        token: str | None = None,
        parent_dir: str | os.PathLike[str] | None = None,
        timeout: float = 5.0,
        max_frame: int = MAX_FRAME,
        max_connections: int = 4096,
    ) -> None:
        self.registry = registry
        self.allowed_uids = frozenset(allowed_uids) if allowed_uids is not None else frozenset({os.getuid()})
        self.require_token = require_token
        self.token = token or secrets_module.token_urlsafe(32)
        # Least privilege (a job's `secrets: declared`): steps that may not register get this token instead,
        # which the server accepts for "mask" only.
        self.mask_token = secrets_module.token_urlsafe(32)
        self._tokens_registered = False
        self.timeout = timeout
        self.max_frame = max_frame
        self.max_connections = max_connections
        self._parent_dir = parent_dir
        self.directory: str | None = None
        self.path: str | None = None
        self._listener: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._conns: set[_Conn] = set()
        self._pending: list[tuple[_Conn, list[str]]] = []
        # Registration runs in its own thread, so that a registry that is slow to return (a live stream whose
        # sink blocks holds add() up) never stops the loop from reading, accepting and timing out clients.
        self._jobs: queue.SimpleQueue[list[tuple[_Conn, list[str]]] | None] = queue.SimpleQueue()
        self._done: collections.deque[list[tuple[_Conn, dict[str, Any]]]] = collections.deque()
        self._busy = False
        self._registrar: threading.Thread | None = None
        self._listening = False
        self.stats = {"accepted": 0, "registered": 0, "requests_ok": 0, "refused_uid": 0,
                      "refused_token": 0, "bad_requests": 0, "timeouts": 0, "masked": 0}

    def __repr__(self) -> str:  # never the token
        return f"SecretSocketServer(path={self.path!r})"

    # --- life cycle --------------------------------------------------------------------------------------

    def register_tokens(self) -> None:
        """Register the two tokens as secrets (start does it, once): call it inside the registry's start-up
        batch so that they are compiled with the job's secrets.

        Example::

            with registry.batch():
                registry.add_many(values, source="configuration")
                server.register_tokens()
            server.start()
        """
        if not self._tokens_registered:
            for token in (self.token, self.mask_token):
                self.registry.add(token, source="secrets socket token")
            self._tokens_registered = True

    def start(self, *, parent_dir: str | os.PathLike[str] | None = None) -> SecretSocketServer:
        """Create the private directory and the socket (under `parent_dir` if given, else the one the server
        was made with), register the tokens as secrets, start serving."""
        if self._thread is not None:
            raise RuntimeError("secret socket server already started")
        if parent_dir is not None:
            self._parent_dir = parent_dir
        self.register_tokens()
        parent = self._parent_dir
        # sun_path holds 107 bytes: a deep work dir would make bind() fail, so fall back to the temp dir
        # (the socket's own directory is private either way).
        if parent is not None and len(os.fsencode(parent)) + len("/runnerlib-secrets-xxxxxxxx/") + len(SOCKET_NAME) > 107:
            log.info("secrets socket: %s is too deep for a socket path; using the temporary directory", parent)
            parent = None
        self.directory = tempfile.mkdtemp(prefix="runnerlib-secrets-", dir=parent)  # mode 0700
        if len(os.fsencode(os.path.join(self.directory, SOCKET_NAME))) > 107:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise OSError(f"secrets socket: the path under {self.directory!r} exceeds the 107-byte limit of Unix "
                          "socket paths; set TMPDIR to a shorter directory")
        os.chmod(self.directory, 0o700)
        self.path = os.path.join(self.directory, SOCKET_NAME)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old_umask = os.umask(0o177)  # the socket is born 0600: no window where it is wider
            try:
                listener.bind(self.path)
            finally:
                os.umask(old_umask)
            listener.listen(4096)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            shutil.rmtree(self.directory, ignore_errors=True)
            raise
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._listen(True)
        self._registrar = threading.Thread(target=self._register_batches, name="runnerlib-secrets-registrar",
                                           daemon=True)
        self._registrar.start()
        self._thread = threading.Thread(target=self._serve, name="runnerlib-secrets-socket", daemon=True)
        self._thread.start()
        return self

    def env(self, *, register: bool = True) -> dict[str, str]:
        """The two variables for trusted steps (never give them to untrusted ones). `register=False` gives
        the mask-only token: the step can ask for masking but its registrations are refused."""
        if self.path is None:
            raise RuntimeError("secret socket server is not started")
        return {SOCKET_VAR: self.path, TOKEN_VAR: self.token if register else self.mask_token}

    def stop(self) -> None:
        """Stop serving, close every connection, remove the socket and its directory. Idempotent."""
        if self._thread is not None:
            self._stopping.set()
            with contextlib.suppress(OSError):
                assert self._wake_w is not None
                self._wake_w.send(b"x")
            self._thread.join()
            self._thread = None
        if self._registrar is not None:
            self._jobs.put(None)
            self._registrar.join(timeout=10)
            if self._registrar.is_alive():
                log.warning("secrets socket: the registry has not returned for 10 s; stopping without it")
            self._registrar = None
        for conn in list(self._conns):
            self._close(conn)
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._listener = self._wake_r = self._wake_w = None
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> SecretSocketServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the loop ----------------------------------------------------------------------------------------

    def _listen(self, on: bool) -> None:
        assert self._selector is not None and self._listener is not None
        if on and not self._listening:
            self._selector.register(self._listener, selectors.EVENT_READ, "listen")
        elif not on and self._listening:
            self._selector.unregister(self._listener)
        self._listening = on

    def _serve(self) -> None:
        assert self._selector is not None
        next_sweep = time.monotonic()
        paused_until = 0.0
        while not self._stopping.is_set():
            try:
                events = self._selector.select(timeout=0.1)
            except InterruptedError:
                continue
            for key, mask in events:
                if key.data == "wake":
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(64)  # type: ignore[union-attr]
                elif key.data == "listen":
                    if not self._accept():
                        # Out of file descriptors: stop polling the listener for a moment rather than spin.
                        self._listen(False)
                        paused_until = time.monotonic() + 0.1
                else:
                    try:
                        self._handle(key.data, mask)
                    except Exception:  # noqa: BLE001 - one connection's bug must not end the server
                        log.exception("secrets socket: unexpected error; closing that connection")
                        self._close(key.data)
            while self._done:
                for conn, payload in self._done.popleft():
                    self._answer(conn, payload)
                self._busy = False
            if self._pending and not self._busy:
                # Everything read since the last hand-over goes as one batch (see _register_batch).
                self._busy = True
                self._jobs.put(self._pending)
                self._pending = []
            now = time.monotonic()
            if paused_until and now >= paused_until and len(self._conns) < self.max_connections:
                paused_until = 0.0
                self._listen(True)
            if now >= next_sweep:
                next_sweep = now + 0.1
                for conn in [c for c in self._conns if c.deadline <= now]:
                    self._expire(conn)

    def _accept(self) -> bool:
        assert self._listener is not None and self._selector is not None
        for _ in range(256):  # bounded, so a flood cannot starve the connections already open
            if len(self._conns) >= self.max_connections:
                self._listen(False)
                return True
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return True
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("secrets socket: cannot accept (%s); retrying shortly", exc.strerror)
                    return False
                if exc.errno in (errno.ECONNABORTED, errno.EINTR):
                    continue
                raise
            sock.setblocking(False)
            pid, uid, _gid = _PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
            conn = _Conn(sock=sock, uid=uid, pid=pid, deadline=time.monotonic() + self.timeout)
            self._conns.add(conn)
            self.stats["accepted"] += 1
            if uid not in self.allowed_uids:
                self.stats["refused_uid"] += 1
                log.warning("secrets socket: refused a connection from uid %d (pid %d): uid not allowed", uid, pid)
                self._respond(conn, {"status": "error", "error": f"uid {uid} is not allowed to use the secrets socket"})
            else:
                self._selector.register(sock, selectors.EVENT_READ, conn)
        return True

    def _handle(self, conn: _Conn, mask: int) -> None:
        try:
            if conn.phase == "read":
                self._read(conn)
            elif conn.phase == "write" and mask & selectors.EVENT_WRITE:
                self._write(conn)
            elif conn.phase == "drain":
                self._drain(conn)
        except OSError:
            self._close(conn)  # the peer went away; nothing to tell it

    def _read(self, conn: _Conn) -> None:
        try:
            chunk = conn.sock.recv(65536)
        except BlockingIOError:
            return
        if not chunk:
            if conn.length is None:
                reason = f"truncated request: expected a 4-byte length, got {len(conn.buf)} byte(s)"
            else:
                reason = f"truncated request: expected {conn.length} bytes, got {len(conn.buf) - HEADER.size}"
            self._bad(conn, reason)
            return
        conn.buf += chunk
        if conn.length is None and len(conn.buf) >= HEADER.size:
            (conn.length,) = HEADER.unpack_from(conn.buf)
            if conn.length > self.max_frame:
                self._bad(conn, f"request length {conn.length} exceeds the limit of {self.max_frame} bytes")
                return
        if conn.length is not None and len(conn.buf) >= HEADER.size + conn.length:
            body = bytes(conn.buf[HEADER.size : HEADER.size + conn.length])
            conn.buf.clear()
            self._process(conn, body)

    def _process(self, conn: _Conn, body: bytes) -> None:
        try:
            message = parse_request(body)
            given = message.get("token")
            if given is None and self.require_token:
                self.stats["refused_token"] += 1
                raise FrameError('authentication required: add "token" (REACTORCIDE_SECRETS_TOKEN) to the request')
            mask_only = False
            if given is not None:
                raw = given.encode("utf-8", "surrogatepass") if isinstance(given, str) else b""
                # Both comparisons always run: which token matched must not show in the timing.
                full = hmac.compare_digest(raw, self.token.encode("utf-8"))
                mask_only = hmac.compare_digest(raw, self.mask_token.encode("utf-8"))
                if not (full or mask_only):
                    self.stats["refused_token"] += 1
                    log.warning("secrets socket: refused uid %d (pid %d): wrong token", conn.uid, conn.pid)
                    self._respond(conn, {"status": "error", "error": "authentication failed: wrong token"})
                    return
            conn.action, values, conn.many = check_request(message)
            if mask_only and conn.action != "mask":
                self.stats["refused_token"] += 1
                log.warning("secrets socket: refused a registration from uid %d (pid %d): the step's token "
                            "may only mask (secrets: declared, without register_secrets: true)", conn.uid, conn.pid)
                raise FrameError("this step may not register secrets: the job declares its secrets and the step "
                                 "does not say register_secrets: true")
        except FrameError as exc:
            self._bad(conn, str(exc))
            return
        # Handled together with the other requests read meanwhile (see _register_batch).
        conn.phase = "pending"
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)  # type: ignore[union-attr]  # quiet until answered
        self._pending.append((conn, values))

    def _register_batches(self) -> None:
        """The registrar thread: registers each batch handed over by the loop, then hands the replies back."""
        while (batch := self._jobs.get()) is not None:
            try:
                answers = self._register_batch(batch)
            except BaseException:  # noqa: BLE001 - the loop must get its answers whatever happens
                answers = [(conn, {"status": "error", "error": "internal error while registering"})
                           for conn, _ in batch]
            self._done.append(answers)
            with contextlib.suppress(OSError):
                self._wake_w.send(b"r")  # type: ignore[union-attr]

    def _register_batch(self, batch: list[tuple[_Conn, list[str]]]) -> list[tuple[_Conn, dict[str, Any]]]:
        """Register every request of a batch, one registry update per uid, then mask the mask requests' texts;
        the replies.

        An update costs about a millisecond whatever its size, so under load batching multiplies throughput
        (bench_secret_socket.py). Each reply is built only after the add that covered its values returned,
        and masking comes after every registration of the batch, so it covers all that were acknowledged.
        """
        by_uid: dict[int, list[tuple[_Conn, list[str]]]] = {}
        masks = [(conn, texts) for conn, texts in batch if conn.action == "mask"]
        for conn, values in batch:
            if conn.action == "register":
                by_uid.setdefault(conn.uid, []).append((conn, values))
        batchable = hasattr(self.registry, "add_many") and hasattr(self.registry, "secrets")
        answers: list[tuple[_Conn, dict[str, Any]]] = []
        for uid, requests in by_uid.items():
            source = f"socket(uid={uid})"
            try:
                if len(requests) == 1 or not batchable:
                    counts = [self._register(values, source) for _, values in requests]
                else:
                    self._register([v for _, values in requests for v in values], source)
                    known = set(self.registry.secrets())  # type: ignore[attr-defined]
                    counts = [sum(v.encode("utf-8", "surrogateescape") in known for v in values)
                              for _, values in requests]
            except Exception as exc:  # noqa: BLE001 - a registry failure must not kill the server
                log.error("secrets socket: the registry failed: %s", type(exc).__name__,
                          exc_info=log.isEnabledFor(logging.DEBUG))
                answers += [(conn, {"status": "error", "error": "internal error while registering"})
                            for conn, _ in requests]
                continue
            answers += [(conn, {"status": "ok", "registered": n})
                        for (conn, _), n in zip(requests, counts, strict=True)]
        for conn, texts in masks:
            answers.append((conn, self._mask(conn, texts)))
        return answers

    def _mask(self, conn: _Conn, texts: list[str]) -> dict[str, Any]:
        try:
            masked = [self.registry.mask_text(text) for text in texts]
        except Exception as exc:  # noqa: BLE001 - a registry failure must not kill the server
            log.error("secrets socket: masking failed: %s", type(exc).__name__,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            return {"status": "error", "error": "internal error while masking"}
        return {"status": "ok", "texts": masked} if conn.many else {"status": "ok", "text": masked[0]}

    def _answer(self, conn: _Conn, payload: dict[str, Any]) -> None:
        if conn.phase != "pending":
            return  # closed meanwhile (server stopping)
        if payload.get("status") == "ok":
            self.stats["requests_ok"] += 1
            if conn.action == "mask":
                self.stats["masked"] += 1
            else:
                self.stats["registered"] += payload["registered"]
        self._respond(conn, payload)

    def _register(self, values: list[str], source: str) -> int:
        add_many = getattr(self.registry, "add_many", None)
        if add_many is not None:
            return int(add_many(values, source=source))
        return sum(1 for value in values if self.registry.add(value, source=source))

    def _bad(self, conn: _Conn, reason: str) -> None:
        self.stats["bad_requests"] += 1
        log.info("secrets socket: bad request from uid %d (pid %d): %s", conn.uid, conn.pid, reason)
        self._respond(conn, {"status": "error", "error": reason})

    def _expire(self, conn: _Conn) -> None:
        if conn.phase == "pending":
            return  # waiting for the registry: answered as soon as it returns
        if conn.phase == "read":
            self.stats["timeouts"] += 1
            self._respond(conn, {"status": "error",
                                 "error": f"timed out after {self.timeout:g} s waiting for the request"})
        else:
            self._close(conn)

    def _respond(self, conn: _Conn, payload: dict[str, Any]) -> None:
        conn.out = _reply(payload)
        conn.phase = "write"
        conn.deadline = time.monotonic() + self.timeout
        try:
            self._write(conn)
        except OSError:
            self._close(conn)

    def _write(self, conn: _Conn) -> None:
        assert self._selector is not None
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            sent = 0
        conn.out = conn.out[sent:]
        if conn.out:
            self._set_events(conn, selectors.EVENT_WRITE)
            return
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_WR)
        conn.phase = "drain"
        conn.deadline = time.monotonic() + DRAIN_SECONDS
        self._set_events(conn, selectors.EVENT_READ)

    def _drain(self, conn: _Conn) -> None:
        try:
            chunk = conn.sock.recv(65536)
        except BlockingIOError:
            return
        conn.drained += len(chunk)
        if not chunk or conn.drained > DRAIN_BYTES:
            self._close(conn)

    def _set_events(self, conn: _Conn, events: int) -> None:
        assert self._selector is not None
        try:
            self._selector.modify(conn.sock, events, conn)
        except KeyError:
            self._selector.register(conn.sock, events, conn)

    def _close(self, conn: _Conn) -> None:
        if conn.phase == "closed":
            return
        conn.phase = "closed"
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn.sock)
        conn.sock.close()
        self._conns.discard(conn)
        if (not self._listening and not self._stopping.is_set() and self._listener is not None
                and len(self._conns) < self.max_connections):
            with contextlib.suppress(KeyError, ValueError):
                self._listen(True)
