"""Known credential formats (security/known_formats.py): tokens nobody registered are masked, streaming.

Each attack prints a credential of a well-known shape that no source registered; the control runs the same
bytes through the registry's masker alone (the protection off) and finds the credential in clear.
"""

from __future__ import annotations

import base64
import os
import random
import re
import subprocess
import sys

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import runnerlib.security.known_formats as kf
from runnerlib.security.known_formats import (
    KnownFormatsFilter,
    MaskedThenKnown,
    NoticeOnce,
    mask_known_formats,
)
from runnerlib.security.registry import SecretRegistry
from runnerlib.testing import assert_no_fragment, stream_through, write_splits

_rnd = random.Random(12)
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _r(n: int, alphabet: str = _ALNUM) -> str:
    return "".join(_rnd.choice(alphabet) for _ in range(n))


PEM_BODY = "\n".join(_r(64, _ALNUM + "+/") for _ in range(6))
# (format name, text as printed, the secret part that must not survive)
CASES = [
    ("GitHub token", "ghp_" + (s := _r(36)), s),
    ("GitHub token", "gho_" + (s := _r(36)), s),
    ("GitHub token", "ghs_" + (s := _r(36)), s),
    ("GitHub token", "ghu_" + (s := _r(36)), s),
    ("GitHub token", "ghr_" + (s := _r(36)), s),
    ("GitHub token", "github_pat_11" + (s := _r(20) + "_" + _r(59)), s),
    ("GitLab token", "glpat-" + (s := _r(20, _ALNUM + "-_")), s),
    ("Slack token", "xoxb-" + (s := "1234567890-" + _r(24)), s),
    ("Slack token", "xoxp-" + (s := "98765-4321-" + _r(32)), s),
    ("AWS access key id", (s := "AKIA" + _r(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")), s),
    ("AWS access key id", (s := "ASIA" + _r(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")), s),
    ("Stripe key", "sk_live_" + (s := _r(24)), s),
    ("Stripe key", "rk_live_" + (s := _r(24)), s),
    ("private key (PEM block)",
     "-----BEGIN RSA PRIVATE KEY-----\n" + (s := PEM_BODY) + "\n-----END RSA PRIVATE KEY-----", s),
    ("private key (PEM block)",
     '{"private_key": "-----BEGIN PRIVATE KEY-----\\n' + (s := PEM_BODY.replace("\n", "\\n"))
     + '\\n-----END PRIVATE KEY-----\\n"}', s),
    ("Authorization header", "curl -H 'Authorization: Bearer " + (s := _r(40, _ALNUM + "._-")) + "' x", s),
    ("Authorization header", "authorization: Basic " + (s := _r(24) + "=="), s),
    ("Authorization header", '"Authorization": "token ' + (s := _r(40)) + '"', s),
    ("signed-URL parameter", "GET https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4&X-Amz-Credential="
     + (s := "AKIAEXAMPLE%2F20261205%2Fus-east-1%2Fs3%2Faws4_request") + "&X-Amz-Date=1", s),
    ("signed-URL parameter", "https://b.s3/k?X-Amz-Signature=" + (s := _r(64, "0123456789abcdef")) + " 200", s),
    ("signed-URL parameter", "https://b.s3/k?X-Amz-Security-Token=" + (s := _r(120, _ALNUM + "%")) + "&a=b", s),
    ("signed-URL parameter", "https://a.blob.core.windows.net/c/b?sv=2022&sig=" + (s := _r(43, _ALNUM + "%")) + "&se=1", s),
    ("token parameter", "https://gitlab.example/api/v4/projects?private_token=" + (s := _r(20)) + "&x=1", s),
    ("token parameter", "PRIVATE-TOKEN: " + (s := _r(20)), s),
    ("npm token", "npm_" + (s := _r(36)), s),
    ("PyPI token", "pypi-AgEIcHlwaS5vcmc" + (s := _r(150, _ALNUM + "-_")), s),
    ("PyPI token", "pypi-AgENdGVzdC5weXBpLm9yZw" + (s := _r(120, _ALNUM + "-_")), s),
    ("Docker Hub token", "dckr_pat_" + (s := _r(27, _ALNUM + "-_")), s),
    ("Google API key", "AIza" + (s := _r(35, _ALNUM + "-_")), s),
    ("Vault token", "hvs." + (s := _r(90, _ALNUM + "_-")), s),
    ("OpenAI key", "sk-proj-" + (s := _r(156, _ALNUM + "_-")), s),
    ("Anthropic key", "sk-ant-api03-" + (s := _r(93, _ALNUM + "_-") + "AA"), s),
]


@pytest.mark.parametrize(("name", "text", "secret"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_format_is_masked_and_named(name: str, text: str, secret: str) -> None:
    data = f"step output: {text}\nnext line\n".encode()
    notices: list[str] = []
    out: list[bytes] = []
    stage = KnownFormatsFilter(SecretRegistry().stream(out.append), notice=NoticeOnce(notices.append))
    stage.write(data)
    stage.close()
    masked = b"".join(out)
    assert_no_fragment(masked, [secret.encode()])
    assert b"***" in masked and masked.endswith(b"\nnext line\n")
    assert notices == [f"masked a{'n' if name[0] in 'AEIOU' or name.startswith('npm') else ''} {name} (known format)"]
    assert secret not in "".join(notices)
    # Protection off: the registry masker alone knows nothing of it.
    assert secret.encode() in stream_through(SecretRegistry(), [data])


ORDINARY = [
    b"Collecting ghp_helper==1.0 (from -r requirements.txt)",      # too short for a token
    b"export AKIA=1; ASIAN markets; MASKIA1234567890ABCDEF",        # no 16 chars / glued to a word
    b"akiaabcdefghijklmnop",                                         # AWS ids are upper case
    b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----",
    b"-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
    b"Authorization: required for this endpoint",
    b"see docs: signature=abc sig is short; mysig=abcdefghijkl",
    b"job_token usage: pass it as a header",
    b"sk_test_abcdefghijklmnopqrstuvwxyz",
    b"npm_config_cache=/tmp/npm_cache_abcdefghijklmnopqrstuvwxyz0123456789",  # npm's own variables
    b"AIzaSyShort; xAIzaSyB1234567890abcdefghijklmnopqrstuvw",       # too short / glued to a word
    b"hvs.short hvb.example sk-proj-name sk-ant-notakey",
    b"pypi-AgEIcHlwaS5vcmc is how a token starts",
    b"docker pull example/dckr_pat_tool:latest",
]


# Where CI jobs print them: an .npmrc, twine's and docker's logins, a Maps request, Vault's and the SDKs' variables.
IN_CONTEXT = [
    b"//registry.npmjs.org/:_authToken=npm_" + _r(36).encode(),
    b"TWINE_PASSWORD=pypi-AgEIcHlwaS5vcmc" + _r(150, _ALNUM + "-_").encode(),
    b"echo dckr_pat_" + _r(27, _ALNUM + "-_").encode() + b" | docker login -u ci --password-stdin",
    b"GET https://maps.googleapis.com/maps/api/geocode/json?address=x&key=AIza" + _r(35, _ALNUM + "-_").encode(),
    b"export VAULT_TOKEN=hvs." + _r(90, _ALNUM + "_-").encode(),
    b'{"api_key": "sk-proj-' + _r(156, _ALNUM + "_-").encode() + b'"}',
    b"x-api-key: sk-ant-api03-" + _r(95, _ALNUM + "_-").encode(),
]


@pytest.mark.parametrize("text", IN_CONTEXT)
def test_tokens_in_the_context_ci_jobs_print_them(text: bytes) -> None:
    masked, names = mask_known_formats(text)
    assert len(names) == 1 and b"***" in masked
    token = re.search(rb"(npm_|pypi-|dckr_pat_|AIza|hvs\.|sk-proj-|sk-ant-)[A-Za-z0-9_-]+", text)
    assert token is not None
    assert_no_fragment(masked, [token.group()[len(token.group(1)):]])


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_output_is_not_masked(text: bytes) -> None:
    assert mask_known_formats(text) == (text, [])
    out: list[bytes] = []
    stage = KnownFormatsFilter(out.append)
    for i in range(len(text)):
        stage.write(text[i:i + 1])
    stage.close()
    assert b"".join(out) == text


def test_the_ci_log_of_the_benchmark_passes_unchanged() -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
    from bench_masking import make_log

    log = make_log(random.Random(3), 1, [])
    assert mask_known_formats(log) == (log, [])


_tokens = st.sampled_from(CASES).map(lambda c: (c[1].encode(), c[2].encode()))
_filler = st.binary(max_size=40).map(lambda b: b.replace(b"-", b"."))


@st.composite
def _planted(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    parts, secrets = [], []
    for _ in range(draw(st.integers(1, 4))):
        text, secret = draw(_tokens)
        parts += [draw(_filler), b"\n", text, b"\n"]
        secrets.append(secret)
    parts.append(draw(_filler))
    return b"".join(parts), secrets


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_stream_equals_whole_and_no_fragment_at_any_split(data: st.DataObject) -> None:
    text, secrets = data.draw(_planted())
    chunks = data.draw(write_splits(text, max_writes=30))
    out: list[bytes] = []
    stage = KnownFormatsFilter(out.append)
    for chunk in chunks:
        stage.write(chunk)
        assert len(stage._pending) <= 16384 + 2 * kf.MAX_PREFIX + 100  # bounded hold-back
    stage.close()
    streamed = b"".join(out)
    assert streamed == mask_known_formats(text)[0]
    assert_no_fragment(streamed, [s for s in secrets], min_fragment=8, allowed=[text.replace(s, b"") for s in secrets])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_idle_flushes_between_writes_never_release_a_token(data: st.DataObject) -> None:
    # An idle flush after every write (a slow writer): a prefix released early is recognised through the
    # context kept from the emitted bytes, and a token whose prefix is complete is held.
    text, secrets = data.draw(_planted())
    out: list[bytes] = []
    stage = KnownFormatsFilter(out.append)
    for chunk in data.draw(write_splits(text, max_writes=30)):
        stage.write(chunk)
        stage.flush_idle()
    stage.close()
    assert_no_fragment(b"".join(out), secrets, min_fragment=8,
                       allowed=[text.replace(s, b"") for s in secrets])


def test_prefix_split_then_idle_flush_then_rest() -> None:
    token = "ghp_" + _r(36)
    out: list[bytes] = []
    stage = KnownFormatsFilter(out.append)
    stage.write(b"token: gh")
    stage.flush_idle()          # releases "gh": it might be a word
    assert b"".join(out) == b"token: gh"
    stage.write(token[2:].encode() + b"\n")
    stage.close()
    assert b"".join(out) == b"token: gh***\n"


def test_prefix_released_one_byte_at_a_time_by_idle_flushes() -> None:
    # Found by the property above: `g` and then `h` released by two idle flushes; the second alone is no
    # prefix start, but the context `\ngh` is.
    token = b"ghp_" + _r(36).encode()
    out: list[bytes] = []
    stage = KnownFormatsFilter(out.append)
    for chunk in (b"\ng", b"h", token[2:] + b"\n"):
        stage.write(chunk)
        stage.flush_idle()
    stage.close()
    assert b"".join(out) == b"\ngh***\n"


@pytest.mark.parametrize("idle", [False, True])
def test_seam_between_large_writes(idle: bool) -> None:
    # A large write ending in a possible prefix start, then a large write: only the seam is rescanned.
    token = b"github_pat_11" + _r(70, _ALNUM + "_").encode()
    filler = b"x" * 5000 + b"\n"
    for cut in range(1, 14):
        out: list[bytes] = []
        stage = KnownFormatsFilter(out.append)
        stage.write(filler + token[:cut])
        if idle:
            stage.flush_idle()
        stage.write(token[cut:] + b"\n" + filler + b"gh")    # ends in a possible start again, which is not one
        stage.write(b"ost and more text " * 3)
        stage.close()
        # An idle flush may show the first bytes of a prefix (never of the token after it); otherwise the
        # stream is exactly the whole-output masking.
        shown = token[:cut] if idle and cut < len(b"github_pat_") else b""
        assert b"".join(out) == filler + shown + b"***\n" + filler + b"ghost and more text " + \
            b"ost and more text " * 2
        assert_no_fragment(b"".join(out), [token[13:]], min_fragment=8)
        assert b"ghost and more text " in b"".join(out)


def test_adjacent_blocks_across_a_held_cut_give_one_replacement() -> None:
    # Found by fuzz/fuzz_known_formats.py: a block emitted, the adjacent one held (no END yet) and masked at
    # close came out as `******`; the whole output has one run, so one replacement.
    block = b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----"
    data = b"x " + block + b"-----BEGIN RSA PRIVATE KEY-----\nBBBB\n"
    out: list[bytes] = []
    stage = KnownFormatsFilter(out.append)
    stage.write(data)
    stage.close()
    assert b"".join(out) == mask_known_formats(data)[0] == b"x ***"


def test_a_complete_prefix_is_held_until_the_token_ends() -> None:
    out: list[bytes] = []
    stage = KnownFormatsFilter(out.append)
    stage.write(b"ok\nAuthorization: Bearer abc")
    stage.flush_idle()
    assert b"".join(out) == b"ok\n"
    stage.write(b"defghijk\n")
    assert b"".join(out) == b"ok\nAuthorization: Bearer ***\n"


def test_hold_back_is_bounded_by_the_window() -> None:
    out: list[bytes] = []
    stage = KnownFormatsFilter(out.append)
    stage.write(b"-----BEGIN PRIVATE KEY-----\n")
    for _ in range(400):
        stage.write(b"A" * 63 + b"\n")           # no END: fail closed at the 16 KiB window
        assert len(stage._pending) <= 16384 + 64
    stage.close()
    masked = b"".join(out)
    assert masked.startswith(b"***") and b"A" * 63 in masked   # beyond the window, lines pass again


@pytest.mark.parametrize("engine", ["hyperscan", "ahocorasick"])
def test_both_prefilter_engines_agree(engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kf.ENGINE_ENV, engine)
    monkeypatch.setattr(kf, "_finder", None)
    if kf.engine() != engine:
        pytest.skip(f"{engine} is not installed here")
    text = b"\n".join(c[1].encode() for c in CASES) + b"\n" + b"\n".join(ORDINARY)
    masked, names = mask_known_formats(text)
    for _name, _text, secret in CASES:
        assert secret.encode() not in masked
    for ordinary in ORDINARY:
        assert ordinary in masked
    assert len(names) == len(CASES)


def test_mask_cli_masks_and_notices_and_can_be_turned_off() -> None:
    token = "glpat-" + _r(20)
    data = f"push with {token}\n".encode()
    base = [sys.executable, "-m", "runnerlib.cli", "mask"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    on = subprocess.run(base, input=data, capture_output=True, env=env, timeout=120)
    assert on.returncode == 0 and on.stdout == b"push with ***\n"
    assert on.stderr == b"runnerlib mask: masked a GitLab token (known format)\n"
    off = subprocess.run(base + ["--no-known-formats"], input=data, capture_output=True, env=env, timeout=120)
    assert off.stdout == data and off.stderr == b""


def test_log_lines_helper() -> None:
    token = "xoxb-" + _r(30)
    assert kf.mask_known_formats_text(f"notify {token} é") == "notify *** é"
    assert kf.mask_known_formats_text("plain é") == "plain é"


def test_parallel_streams_in_threads() -> None:
    # Steps run in parallel threads; Hyperscan forbids sharing one scratch between concurrent scans.
    import threading

    token = b"glpat-" + _r(24).encode()
    data = (b"x" * 200 + b"\n" + token + b"\n") * 400
    results: list[bytes] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            out: list[bytes] = []
            stage = KnownFormatsFilter(out.append)
            for i in range(0, len(data), 777):
                stage.write(data[i:i + 777])
            stage.close()
            results.append(b"".join(out))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 8
    assert all(r == data.replace(token, b"***") for r in results)


def test_a_registered_secret_holding_a_token_is_masked_whole() -> None:
    # A SAS URL registered as one secret: masking its `sig=` first would change the occurrence, and the
    # registry would no longer see the rest of it (account, container, other parameters).
    sas = "https://acct7.blob.core.windows.net/private-c?sv=2022-11&sr=c&sig=AbCdEfGh12345678%3D"
    registry = SecretRegistry()
    registry.add(sas, source="test")
    data = f"upload to {sas} done\n".encode()
    out: list[bytes] = []
    stage = MaskedThenKnown(registry, out.append)
    stage.write(data)
    stage.close()
    assert b"".join(out) == b"upload to *** done\n"
    # Protection off (the other order: known formats first, then the registry): the rest leaks.
    leaked: list[bytes] = []
    masked = registry.stream(leaked.append)
    first = KnownFormatsFilter(masked)
    first.write(data)
    first.close()
    masked.close()
    assert b"acct7.blob.core.windows.net/private-c" in b"".join(leaked)


# Pieces an attacker (or a fuzzer) glues together: every prefix spelling, token characters, separators.
_SPAM_PIECES = [p for p in kf._PREFIXES] + [b"A", b"Z", b"7", b"a", b"_", b"-", b".", b"=", b" ", b"\n", b"?", b"&",
                                           b": Bearer ", b"RSA PRIVATE KEY-----", b"-----END RSA PRIVATE KEY-----",
                                           b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" * 2,
                                           b"\r\n", b"Ab3De6Gh9Jk2Mn5Pq8"]  # the lines of a folded token


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_SPAM_PIECES), max_size=80), st.booleans())
def test_viable_prefilter_resolves_like_every_occurrence(pieces: list[bytes], final: bool) -> None:
    """The Hyperscan prefilter reports only prefixes followed by what their format needs (or near the end):
    the cut, the spans and the names are those of resolving every literal occurrence."""
    if kf.engine() != "hyperscan":
        pytest.skip("the viable prefilter is Hyperscan's")
    buf = b"".join(pieces)
    finder = kf._get_finder()
    every = kf._resolve(buf, 0, final, hits=finder.find_literal(buf))
    assert kf._resolve(buf, 0, final, hits=finder.find_viable(buf)) == every
    assert kf._resolve(buf, 0, final, hits=finder.find(buf)) == every
    assert kf._resolve(buf, 5, final, hits=finder.find_viable(buf)) == kf._resolve(buf, 5, final,
                                                                                   hits=finder.find_literal(buf))


@pytest.mark.parametrize("unit", [b"ghp_", b"AKIA", b"github_pat_", b"-----BEGIN ", b"Authorization: ", b"glpat-x"])
def test_prefix_spam_costs_no_python_per_prefix(unit: bytes) -> None:
    """ATTACK (denial of service): output made of token prefixes with no token behind them. Every occurrence
    used to be a Python callback and a regex (2.8 MB/s); the prefilter now reports only the few near the end of
    the buffer. Control: the literal scan reports every one of them."""
    if kf.engine() != "hyperscan":
        pytest.skip("the viable prefilter is Hyperscan's")
    buf = unit * (65536 // len(unit))
    finder = kf._get_finder()
    # Only the tail, where the next write may complete a token (8,300 bytes for `Authorization`).
    assert len(finder.find(buf)) <= (max(kf._TAILS) + kf.MAX_PREFIX) // len(unit) + 2
    assert len(finder.find_literal(buf)) >= 65536 // len(unit) - 1  # control: the protection off
    out: list[bytes] = []
    stage = KnownFormatsFilter(out.append)
    stage.write(buf)
    stage.close()
    assert b"".join(out) == mask_known_formats(buf)[0]


_TOKEN_CASES = [c for c in CASES if not any(f.caseless for f in kf.FORMATS if f.name == c[0])]


def _streamed_as_whole(line: bytes, chunks: list[bytes]) -> bytes:
    """`line` through the stage in `chunks`; asserts the stream gives the whole buffer's answer."""
    out: list[bytes] = []
    stage = KnownFormatsFilter(out.append)
    for chunk in chunks:
        stage.write(chunk)
    stage.close()
    streamed = b"".join(out)
    assert streamed == mask_known_formats(line)[0]
    return streamed


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_token_in_base64_is_masked_at_any_offset_and_split(data: st.DataObject) -> None:
    """Property (known_formats.BASE64_FORMATS): a token of every format with exact prefixes, inside a base64
    document at any offset (`kubectl get secret -o yaml`'s values, a docker config's `auth`), written in any
    pieces: the stream gives the whole buffer's answer, and no 12 characters that encode only the token's secret
    part survive. Control below: the same with the base64 formats off leaks."""
    name, text, secret = data.draw(st.sampled_from(_TOKEN_CASES))
    before = data.draw(st.sampled_from([b"", b" ", b'{"token":"', b"key=", b"\n"]))
    doc = before + text.encode() + b'"}\n'
    encoded = base64.b64encode(doc)
    line = b"data:\n  value: " + encoded + b"\n"
    streamed = _streamed_as_whole(line, data.draw(write_splits(line, max_writes=10)))
    off = doc.index(secret.encode())
    span = encoded[(off * 4) // 3 + 1:((off + len(secret)) * 4) // 3 - 1]
    assert_no_fragment(streamed, [span], min_fragment=12)


def test_a_token_in_base64_leaks_without_the_base64_formats(monkeypatch: pytest.MonkeyPatch) -> None:
    line = b"token: " + base64.b64encode(CASES[0][1].encode()) + b"\n"
    assert base64.b64encode(CASES[0][1].encode()) not in mask_known_formats(line)[0]
    monkeypatch.setattr(kf, "_STARTS", [tuple(f for f in fs if f not in kf.BASE64_FORMATS) for fs in kf._STARTS])
    assert mask_known_formats(line)[0] == line


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_token_in_base64_of_utf16_is_masked_at_any_offset_and_split(data: st.DataObject) -> None:
    """Property (known_formats.BASE64_FORMATS, `wide`): a token of every format with exact prefixes inside a
    PowerShell command line, UTF-16LE then base64 (`powershell -EncodedCommand ...`), after any text, written in
    any pieces: the stream gives the whole buffer's answer, and no 12 characters that encode only the token's
    secret part survive. Control below: the same without the UTF-16 formats leaks."""
    name, text, secret = data.draw(st.sampled_from(_TOKEN_CASES))
    before = data.draw(st.sampled_from(["", " ", "$env:T = '", "\n", "héllo ", "x="]))
    doc = (before + text + "'; Write-Host done\n").encode("utf-16-le")
    encoded = base64.b64encode(doc)
    line = b"powershell -NoProfile -EncodedCommand " + encoded + b"\n"
    streamed = _streamed_as_whole(line, data.draw(write_splits(line, max_writes=10)))
    off = doc.index(secret.encode("utf-16-le"))
    span = encoded[(off * 4) // 3 + 1:((off + 2 * len(secret)) * 4) // 3 - 1]
    assert_no_fragment(streamed, [span], min_fragment=12)


def test_a_token_in_base64_of_utf16_leaks_without_those_formats(monkeypatch: pytest.MonkeyPatch) -> None:
    wide = base64.b64encode(("$t = '" + CASES[0][1] + "'").encode("utf-16-le"))
    line = b"powershell -EncodedCommand " + wide + b"\n"
    masked, notices = mask_known_formats(line)
    assert wide[16:40] not in masked and notices == [f"{CASES[0][0]} (base64 of UTF-16)"]
    monkeypatch.setattr(kf, "_STARTS", [tuple(f for f in fs if not getattr(f, "wide", False)) for fs in kf._STARTS])
    assert mask_known_formats(line)[0] == line


def test_base64_of_other_text_is_not_read_as_utf16() -> None:
    """The UTF-16 reading needs a NUL after each of the token's characters: a base64 blob whose every other byte
    spells a token after the prefix's encoding, the bytes between them not NUL (here CJK characters), is left
    alone. Control: the same bytes with NULs between them are a token in UTF-16LE, masked."""
    body = b"Zz9" * 12

    def blob(high: int) -> bytes:
        return base64.b64encode("ghp_".encode("utf-16-le") + b"".join(bytes((c, high)) for c in body) + b"\0\0")

    other = b"data: " + blob(0x4E) + b"\n"
    assert mask_known_formats(other)[0] == other
    wide = b"data: " + blob(0) + b"\n"
    assert mask_known_formats(wide)[0] != wide


def _fold(text: bytes, width: int) -> bytes:
    """What `fold -w width` prints (ASCII): every line cut into pieces of `width` bytes."""
    return b"\n".join(line[i:i + width] or b"" for line in text.split(b"\n")
                      for i in range(0, max(len(line), 1), width))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_a_folded_token_is_masked_at_any_width_offset_and_split(data: st.DataObject) -> None:
    """Property (_TokenFormat._folded): a token of every format with a fixed alphabet, folded at any width
    (`fold -w N`, a narrow column) from any column, with CRLF or LF, written in any pieces: the stream gives the
    whole buffer's answer, and no 8 characters of its secret part survive. Two limits (docs/masking.md): a fold
    through the prefix itself is not drawn; where the first line already holds the format's minimum (16
    characters of a Stripe key), only stream == whole is asserted. Control below: without the folded reading
    it leaks."""
    name, text, secret = data.draw(st.sampled_from([c for c in _TOKEN_CASES if not c[0].startswith(("private",
                                                                                                  "signed",
                                                                                                  "token"))]))
    before = data.draw(st.sampled_from([b"", b"token: ", b"x" * 36 + b" ", b"export GH=", b"\x1b[32m"]))
    width = data.draw(st.integers(10, 60))
    line = before + text.encode()
    start = len(before)
    prefix = next(p for p in kf._PREFIXES if text.encode().startswith(p))
    assume(start // width == (start + len(prefix) - 1) // width)  # the prefix stays on one line
    folded = _fold(line + b"\n(next line of output)\n", width)
    if data.draw(st.booleans()):
        folded = folded.replace(b"\n", b"\r\n")
    out: list[bytes] = []
    stage = KnownFormatsFilter(out.append)
    for chunk in data.draw(write_splits(folded, max_writes=12)):
        stage.write(chunk)
    stage.close()
    streamed = b"".join(out)
    assert streamed == mask_known_formats(folded)[0]
    first = _fold(line, width).split(b"\n")
    first_line = next(part for part in first if prefix in part)
    if mask_known_formats(first_line + b"\n")[1] and not first_line.endswith(text.encode()):
        return  # a limit: the first line holds the format's minimum, so the rest on the next lines is left
    assert_no_fragment(streamed.replace(b"\r\n", b"").replace(b"\n", b""), [secret.encode()], min_fragment=8)
    assert streamed.replace(b"\r", b"").replace(b"\n", b"").endswith(b"***(next line of output)")


def test_a_folded_token_leaks_without_the_folded_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    folded = _fold(b"token: " + CASES[0][1].encode() + b"\n", 20)
    assert CASES[0][2][:8].encode() not in mask_known_formats(folded)[0].replace(b"\n", b"")
    monkeypatch.setattr(kf._TokenFormat, "_folded", lambda *a: (kf._NONE, 0, 0))
    assert CASES[0][2][:8].encode() in mask_known_formats(folded)[0].replace(b"\n", b"")


def test_a_line_ending_in_a_short_token_start_is_not_joined_to_ordinary_text() -> None:
    for text in (b"see ghp_abc\nthe next line\n", b"AKIA\nAbcdefghijklmnop is not a key\n",
                 b"ghp_" + b"a" * 10 + b"\n" + b"b" * 10 + b" c\n"):
        assert mask_known_formats(text) == (text, [])
