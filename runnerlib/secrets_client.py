"""Register secrets with the running job from trusted job code: the client of the registration socket.

Reads REACTORCIDE_SECRETS_SOCKET and REACTORCIDE_SECRETS_TOKEN (set by runnerlib for trusted steps only).
Returns once the runner has acknowledged, which it does only after every live output stream masks the values:
printing a value right after registering it is safe.

Example::

    import runnerlib
    token = fetch_deploy_token()
    runnerlib.register_secret(token)
    print(f"using {token}")            # the job log shows "using ***"

`mask_text` / `mask_texts` ask the runner to mask text with every secret it knows, including those other
steps registered at run time, which this process never saw: trusted code uses them before writing anything
another process may read (the workflow API does, for triggers and outputs).

Errors are RegistrationError / MaskingError (both SecretsSocketError) and never contain a value (nor the
token). Only the standard library and runnerlib.security.secret_socket (itself standard library only) are
used, so `import runnerlib; runnerlib.register_secret(...)` stays cheap inside job scripts.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from runnerlib.security.secret_socket import (
    MAX_FRAME,
    MAX_MASK_TEXT,
    SOCKET_VAR,
    TOKEN_VAR,
    encode_frame,
    text_problem,
)

MAX_REPLY = 64 * 1024
# A mask reply carries the masked texts: their size, JSON-escaped, plus room.
MAX_MASK_REPLY = 8 * MAX_FRAME


class SecretsSocketError(RuntimeError):
    """The secrets socket could not serve a request. Never holds a value (nor the token)."""


class RegistrationError(SecretsSocketError):
    """Registration failed: no socket configured, refused by the runner, or a bad reply. Never holds a value."""


class MaskingError(SecretsSocketError):
    """Masking through the runner failed: no socket, refused, unreachable, or a bad reply. Never holds text."""


def socket_configured(environ: Mapping[str, str] | None = None) -> bool:
    """True when this process was given the secrets socket and its token (trusted steps of a runnerlib job)."""
    env = os.environ if environ is None else environ
    return bool(env.get(SOCKET_VAR)) and bool(env.get(TOKEN_VAR))


def register_secret(value: str | bytes, *, socket_path: str | None = None, token: str | None = None,
                    timeout: float = 30.0) -> int:
    """Register one secret with the job's runner; returns how many values it accepted (1, or 0 if too short).

    >>> register_secret("s3cr3t-api-key")   # doctest: +SKIP
    1
    """
    return register_secrets([value], socket_path=socket_path, token=token, timeout=timeout)


def register_secrets(values: Iterable[str | bytes], *, socket_path: str | None = None, token: str | None = None,
                     timeout: float = 30.0) -> int:
    """Register several secrets in one request; returns how many the runner accepted.

    `socket_path` and `token` default to REACTORCIDE_SECRETS_SOCKET and REACTORCIDE_SECRETS_TOKEN. Bytes
    must be UTF-8 (the wire format is JSON). An empty list sends nothing and returns 0.
    """
    items: list[str] = []
    for index, value in enumerate(values):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise RegistrationError(f"secret #{index} is not valid UTF-8 (the protocol carries text)") from None
        if not isinstance(value, str):
            raise RegistrationError(f"secret #{index} must be str or bytes, not {type(value).__name__}")
        problem = text_problem(value)
        if problem:
            raise RegistrationError(f"secret #{index} {problem}")
        items.append(value)
    if not items:
        return 0
    answer = _request({"action": "register", "secrets": items}, socket_path, token, timeout,
                      error=RegistrationError, refused="the registration", max_reply=MAX_REPLY)
    registered = answer.get("registered")
    if not isinstance(registered, int) or isinstance(registered, bool):
        raise RegistrationError('the secrets socket replied "ok" without a "registered" count')
    return registered


def mask_text(text: str, *, socket_path: str | None = None, token: str | None = None,
              timeout: float = 30.0) -> str:
    """`text` masked by the runner with every secret of the job, including ones registered by other steps.

    >>> mask_text(f"DSN=postgres://app:{password}@db")   # doctest: +SKIP
    'DSN=postgres://app:***@db'
    """
    return mask_texts([text], socket_path=socket_path, token=token, timeout=timeout)[0]


def mask_texts(texts: Sequence[str], *, socket_path: str | None = None, token: str | None = None,
               timeout: float = 30.0) -> list[str]:
    """Each text masked by the runner, in order; as few requests as the size limit allows.

    A single text longer than the protocol's limit (MAX_MASK_TEXT bytes of UTF-8) is a MaskingError: split
    it. Raises MaskingError when the socket is not configured, unreachable, or refuses; never returns a text
    unmasked.
    """
    sizes: list[int] = []
    for index, text in enumerate(texts):
        problem = text_problem(text)
        if problem:
            raise MaskingError(f"text #{index} {problem}")
        sizes.append(len(text.encode("utf-8")))
        if sizes[-1] > MAX_MASK_TEXT:
            raise MaskingError(f"text #{index} is {sizes[-1]} bytes; the runner masks at most {MAX_MASK_TEXT} "
                               "bytes per request: split it")
    masked: list[str] = []
    start = 0
    while start < len(texts):
        end, total = start, 0
        while end < len(texts) and total + sizes[end] <= MAX_MASK_TEXT:
            total += sizes[end]
            end += 1
        chunk = list(texts[start:end])
        answer = _request({"action": "mask", "texts": chunk}, socket_path, token, timeout,
                          error=MaskingError, refused="to mask", max_reply=MAX_MASK_REPLY)
        result = answer.get("texts")
        if (not isinstance(result, list) or len(result) != len(chunk)
                or not all(isinstance(t, str) for t in result)):
            raise MaskingError('the secrets socket replied "ok" without the masked "texts"')
        masked += result
        start = end
    return masked


def _request(message: dict[str, Any], socket_path: str | None, token: str | None, timeout: float, *,
             error: type[SecretsSocketError], refused: str, max_reply: int) -> dict[str, Any]:
    """Send one authenticated request; its "ok" answer, or `error` with the runner's reason."""
    path = socket_path or os.environ.get(SOCKET_VAR)
    if not path:
        raise error(
            f"no secrets socket configured: {SOCKET_VAR} is not set (only trusted steps of a runnerlib job get it)"
        )
    token = token if token is not None else os.environ.get(TOKEN_VAR)
    if token:
        message["token"] = token
    reply = _exchange(path, encode_frame(message), timeout, error=error, max_reply=max_reply)
    try:
        answer = json.loads(reply.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise error("the secrets socket sent a reply that is not JSON") from None
    if not isinstance(answer, dict):
        raise error("the secrets socket sent a reply that is not a JSON object")
    if answer.get("status") != "ok":
        reason = answer.get("error")
        reason = reason if isinstance(reason, str) else "no reason given"
        raise error(f"the runner refused {refused}: {reason}")
    return answer


def _exchange(path: str, frame: bytes, timeout: float, *, error: type[SecretsSocketError] = RegistrationError,
              max_reply: int = MAX_REPLY) -> bytes:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            raise error(f"cannot connect to the secrets socket {path}: {exc.strerror or exc}") from None
        reply = bytearray()
        try:
            try:
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                pass  # a refusing server answers before reading everything: read its reply below
            while b"\n" not in reply and len(reply) < max_reply:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        except TimeoutError:
            raise error(f"the secrets socket did not answer within {timeout:g} s") from None
        except OSError as exc:
            # A refusing server may answer and close before reading everything; its reply is still useful.
            if not reply:
                raise error(f"secrets socket {path}: {exc.strerror or exc}") from None
        if b"\n" not in reply:
            raise error("the secrets socket closed without a complete reply")
        return bytes(reply.split(b"\n", 1)[0])
    finally:
        sock.close()
