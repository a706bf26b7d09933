"""Register secrets with the running job from trusted job code: the client of the registration socket.

Reads REACTORCIDE_SECRETS_SOCKET and REACTORCIDE_SECRETS_TOKEN (set by runnerlib for trusted steps only).
Returns once the runner has acknowledged, which it does only after every live output stream masks the values:
printing a value right after registering it is safe.

Example::

    import runnerlib
    token = fetch_deploy_token()
    runnerlib.register_secret(token)
    print(f"using {token}")            # the job log shows "using ***"

Errors are RegistrationError and never contain a value (nor the token). Only the standard library is used,
so `import runnerlib; runnerlib.register_secret(...)` stays cheap inside job scripts.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Iterable

SOCKET_VAR = "REACTORCIDE_SECRETS_SOCKET"
TOKEN_VAR = "REACTORCIDE_SECRETS_TOKEN"
MAX_REPLY = 64 * 1024


class RegistrationError(RuntimeError):
    """Registration failed: no socket configured, refused by the runner, or a bad reply. Never holds a value."""


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
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RegistrationError(f"secret #{index} has no UTF-8 form (an unpaired surrogate)") from None
        items.append(value)
    if not items:
        return 0
    path = socket_path or os.environ.get(SOCKET_VAR)
    if not path:
        raise RegistrationError(
            f"no secrets socket configured: {SOCKET_VAR} is not set (only trusted steps of a runnerlib job get it)"
        )
    token = token if token is not None else os.environ.get(TOKEN_VAR)
    message: dict[str, object] = {"action": "register", "secrets": items}
    if token:
        message["token"] = token
    body = json.dumps(message, ensure_ascii=False).encode("utf-8")
    frame = struct.pack(">I", len(body)) + body
    reply = _exchange(path, frame, timeout)
    try:
        answer = json.loads(reply.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RegistrationError("the secrets socket sent a reply that is not JSON") from None
    if not isinstance(answer, dict):
        raise RegistrationError("the secrets socket sent a reply that is not a JSON object")
    if answer.get("status") != "ok":
        reason = answer.get("error")
        reason = reason if isinstance(reason, str) else "no reason given"
        raise RegistrationError(f"the runner refused the registration: {reason}")
    registered = answer.get("registered")
    if not isinstance(registered, int) or isinstance(registered, bool):
        raise RegistrationError('the secrets socket replied "ok" without a "registered" count')
    return registered


def _exchange(path: str, frame: bytes, timeout: float) -> bytes:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            raise RegistrationError(f"cannot connect to the secrets socket {path}: {exc.strerror or exc}") from None
        reply = bytearray()
        try:
            try:
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                pass  # a refusing server answers before reading everything: read its reply below
            while b"\n" not in reply and len(reply) < MAX_REPLY:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        except TimeoutError:
            raise RegistrationError(f"the secrets socket did not answer within {timeout:g} s") from None
        except OSError as exc:
            # A refusing server may answer and close before reading everything; its reply is still useful.
            if not reply:
                raise RegistrationError(f"secrets socket {path}: {exc.strerror or exc}") from None
        if b"\n" not in reply:
            raise RegistrationError("the secrets socket closed without a complete reply")
        return bytes(reply.split(b"\n", 1)[0])
    finally:
        sock.close()
