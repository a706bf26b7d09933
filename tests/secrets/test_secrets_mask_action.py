"""The "mask" action of the registration socket: trusted code has text masked with every secret the runner
knows (including ones other processes registered), authenticated exactly like "register", since an open mask
action would be an oracle telling anyone whether a guess is a secret."""

from __future__ import annotations

import json
import os
import socket

import pytest
from secrets_testlib import (
    IS_ROOT,
    as_nobody_through_a_link,
    assert_no_fragment,
    frame,
    new_secret,
    raw_request,
)

from runnerlib.secrets_client import MaskingError, mask_text, mask_texts, register_secret
from runnerlib.security.secret_socket import (
    MAX_MASK_TEXT,
    FrameError,
    SecretSocketServer,
    check_mask,
    check_request,
)

# --- the action ------------------------------------------------------------------------------------------------


def test_mask_wire_format(server, registry):
    value = new_secret()
    registry.add(value, source="test")
    reply = raw_request(server.path, frame({"action": "mask", "text": f"dsn=pg://app:{value}@db",
                                            "token": server.token}))
    assert reply == {"status": "ok", "text": "dsn=pg://app:***@db"}
    many = raw_request(server.path, frame({"action": "mask", "texts": [value, "plain", f"é{value}\n"],
                                           "token": server.token}))
    assert many == {"status": "ok", "texts": ["***", "plain", "é***\n"]}
    assert server.stats["masked"] == 2


def test_register_then_mask_from_another_client(server):
    """The case the action exists for: one client registers, another (which never saw the value in its own
    registry) gets it masked; the registration was acknowledged first, so the mask must cover it."""
    value = new_secret()
    text = f"token={value};"
    assert mask_text(text, socket_path=server.path, token=server.token) == text  # not yet a secret
    assert register_secret(value, socket_path=server.path, token=server.token) == 1
    masked = mask_text(text, socket_path=server.path, token=server.token)
    assert masked == "token=***;"
    assert_no_fragment(masked.encode(), value)


def test_register_action_is_unchanged(server, registry):
    value = new_secret()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(server.path)
        sock.sendall(frame({"action": "register", "secrets": [value], "token": server.token}))
        assert sock.makefile("rb").readline() == b'{"status": "ok", "registered": 1}\n'


def test_client_splits_texts_over_requests_by_size(server, registry):
    value = new_secret()
    registry.add(value, source="test")
    texts = [f"{i:04d}" + "x" * 4000 for i in range(80)] + [f"last {value}"]  # ~320 KiB: three requests
    masked = mask_texts(texts, socket_path=server.path, token=server.token)
    assert masked[:-1] == texts[:-1] and masked[-1] == "last ***"
    assert server.stats["masked"] >= 3


def test_oversized_text_gets_a_clear_error(server, registry):
    value = new_secret()
    registry.add(value, source="test")
    big = "a" * MAX_MASK_TEXT + value
    reply = raw_request(server.path, frame({"action": "mask", "text": big, "token": server.token}))
    assert reply["status"] == "error" and f"at most {MAX_MASK_TEXT} bytes" in reply["error"]
    assert value not in json.dumps(reply)
    with pytest.raises(MaskingError, match="split it") as info:
        mask_text(big, socket_path=server.path, token=server.token)
    assert value not in str(info.value)
    # The server is still serving.
    assert mask_text(value, socket_path=server.path, token=server.token) == "***"


@pytest.mark.parametrize("message,reason", [
    ({"action": "mask"}, "exactly one of"),
    ({"action": "mask", "text": "a", "texts": ["b"]}, "exactly one of"),
    ({"action": "mask", "text": 5}, '"text" must be a string'),
    ({"action": "mask", "texts": "abc"}, '"texts" must be a list'),
    ({"action": "mask", "texts": ["ok", None]}, '"texts"[1] must be a string'),
    ({"action": "mask", "text": "\ud800x"}, "unpaired surrogate"),
    ({"action": "unmask", "text": "x"}, "unknown or missing"),
])
def test_bad_mask_requests(server, message, reason):
    reply = raw_request(server.path, frame({**message, "token": server.token}))
    assert reply["status"] == "error" and reason in reply["error"], reply
    with pytest.raises(FrameError, match="."):
        check_request({k: v for k, v in message.items()})


def test_check_mask_and_request():
    assert check_mask({"action": "mask", "text": "x"}) == (["x"], False)
    assert check_mask({"action": "mask", "texts": []}) == ([], True)
    assert check_request({"action": "register", "secrets": ["abcd"]}) == ("register", ["abcd"], True)


# --- authentication: an oracle nobody else may query ------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong", 12345])
def test_mask_without_the_token_is_refused(server, registry, token):
    """Unauthenticated, `mask` would answer "***" exactly when a guess is a secret."""
    value = new_secret()
    registry.add(value, source="test")
    message = {"action": "mask", "text": value}
    if token is not None:
        message["token"] = token
    reply = raw_request(server.path, frame(message))
    assert reply["status"] == "error" and "text" not in reply
    assert "authentication" in reply["error"]
    # Control: with the token, the same guess is answered (the refusal is the token check's doing).
    assert raw_request(server.path, frame({**message, "token": server.token})) == {"status": "ok", "text": "***"}


def test_mask_from_a_uid_not_allowed_is_refused_even_with_the_token(registry):
    value = new_secret()
    registry.add(value, source="test")
    with SecretSocketServer(registry, allowed_uids={os.getuid() + 12345}) as server:
        reply = raw_request(server.path, frame({"action": "mask", "text": value, "token": server.token}))
        assert reply["status"] == "error" and "not allowed" in reply["error"] and "text" not in reply
        with pytest.raises(MaskingError, match="not allowed"):
            mask_text(value, socket_path=server.path, token=server.token)


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="needs root to run a process as uid 65534")
@pytest.mark.parametrize("allowed", [{0}, {0, 65534}])
def test_untrusted_uid_cannot_use_mask_as_an_oracle(registry, shared_dir, allowed):
    value = new_secret()
    registry.add(value, source="test")
    with SecretSocketServer(registry, allowed_uids=allowed, parent_dir=shared_dir) as server:
        # uid 65534 with the stolen token asks whether `value` is a secret.
        proc = as_nobody_through_a_link(server.path, shared_dir,
                                        "c.mask_text(sys.argv[1], socket_path=link, token=sys.argv[2])",
                                        value, server.token)
    if 65534 in allowed:  # the control: the very same attempt from an allowed uid is answered
        assert proc.returncode == 0 and b"ANSWER ***" in proc.stdout, proc.stdout + proc.stderr
    else:
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert b"uid 65534 is not allowed" in proc.stdout and b"***" not in proc.stdout


def test_mask_text_is_part_of_the_top_level_api(server):
    """`runnerlib.mask_text` / `mask_texts`, beside `runnerlib.register_secret`, for trusted scripts."""
    import runnerlib

    value = new_secret()
    runnerlib.register_secret(value, socket_path=server.path, token=server.token)
    assert runnerlib.mask_text(f"x{value}", socket_path=server.path, token=server.token) == "x***"
    assert runnerlib.mask_texts([value], socket_path=server.path, token=server.token) == ["***"]
    assert {"mask_text", "mask_texts"} <= set(dir(runnerlib))
