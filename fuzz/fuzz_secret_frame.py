"""atheris harness: registration-socket frames, parsed directly and sent to a live server.

Run: .venv/bin/python fuzz/fuzz_secret_frame.py -atheris_runs=1000

Properties: parsing (register and mask requests) never raises anything but FrameError; the live server answers every input with one
JSON line whose "status" is "ok" or "error", never echoes the body, and keeps serving.
"""

from __future__ import annotations

import json
import socket
import struct
import sys

import atheris

with atheris.instrument_imports():
    from runnerlib.security.registry import SecretRegistry
    from runnerlib.security.secret_socket import FrameError, SecretSocketServer, check_request, parse_request

REGISTRY = SecretRegistry()
SERVER = SecretSocketServer(REGISTRY, timeout=0.5).start()


def exchange(data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(SERVER.path)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer (and stop reading) before everything is sent
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 3)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    try:
        check_request(parse_request(body))
    except FrameError:
        pass
    if mode == 0:
        return
    if mode == 1:  # a well-framed body, authenticated when it is a JSON object
        try:
            message = json.loads(body)
            if isinstance(message, dict):
                message["token"] = SERVER.token
                body = json.dumps(message).encode()
        except (ValueError, RecursionError):
            pass
        wire = struct.pack(">I", len(body)) + body
    elif mode == 2:  # raw bytes, length prefix included or not
        wire = body
    else:  # a length that lies about the body
        wire = struct.pack(">I", len(body) + 1 + (len(body) % 7)) + body
    reply = exchange(wire)
    if not reply.endswith(b"\n"):
        raise AssertionError(f"no complete reply: {reply!r}")
    answer = json.loads(reply)
    if answer.get("status") not in ("ok", "error"):
        raise AssertionError(f"bad reply {answer!r}")
    if answer["status"] == "error" and len(body) >= 24 and body[:64] in reply:
        raise AssertionError("the error echoes the request")
    if answer["status"] == "ok" and not ({"registered"} <= answer.keys() or answer.keys() & {"text", "texts"}):
        raise AssertionError(f"an ok reply without its result: {answer!r}")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    try:
        atheris.Fuzz()
    finally:
        SERVER.stop()


if __name__ == "__main__":
    main()
