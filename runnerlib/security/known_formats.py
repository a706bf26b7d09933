"""Known credential formats: mask tokens nobody registered (GitHub, GitLab, Slack, AWS, Stripe, PEM keys...).

A byte-stream stage placed AFTER the registry's masking stream (`MaskedThenKnown`). It replaces every
credential of a well-known shape with the replacement (`***`) and reports the format's name (never the value)
through `notice`, so the job log can say `masked a GitHub token (known format)` once per format per step.

Invariant: for any split of the output into writes, the bytes handed to the sink, concatenated, equal
`mask_known_formats(whole output)` - as long as the stream is not flushed in the middle of a token
(flush() and the idle flush keep a token whose prefix has been seen; only close() and the window force it).

Why it is fast. It is on by default on every step's bulk output, so the common case (no credential in a
64 KiB write) must cost little more than one scan: a literal-prefix prefilter finds the few places a token
can start (`ghp_`, `glpat-`, `AKIA`, `-----BEGIN `, `Authorization`, `X-Amz-Signature`..., about 80 exact
literals). Hyperscan scans for them at several GB/s where it is installed; elsewhere ahocorasick-rs, about
0.5 GB/s. Only at a hit does a Python regex confirm the token (`_TokenFormat`, `_PemFormat`). Output made of
prefixes (`ghp_ghp_...`, printed on purpose to slow the masker) would make every one a Python call: past
DENSE_HITS prefixes in a write, Hyperscan reports only those followed by what their format needs (see _Finder).

Hold-back. Bytes are held only from a prefix that is complete (or a tail that could still become one) while
the token behind it is incomplete: a single-line token is final at its newline, at the end of its window
(at most a few KiB) or at close; a PEM block at its END line or its 16 KiB window. The last few bytes already
emitted are kept (never re-emitted) as context, so a prefix split across writes is still recognised and the
token behind it masked even after an idle flush released the prefix's first bytes.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from runnerlib.security.stage import Stage

log = logging.getLogger("runnerlib.secrets.known_formats")

REPLACEMENT = b"***"
# `ahocorasick` forces the fallback prefilter (tests, benchmarks); anything else means Hyperscan if it imports.
ENGINE_ENV = "RUNNERLIB_KNOWN_FORMATS_ENGINE"
# How far before a token's prefix its line's start is looked for, to know the width of a fold (see
# _TokenFormat._folded): a stream keeps this much of what it emitted, so it knows what the whole output shows.
FOLD_LOOKBACK = 256
# Bytes of already-emitted output kept for lookbehind (a `?` before `sig=`), split prefixes and the fold width.
CONTEXT = FOLD_LOOKBACK + 64
_MORE, _NONE, _MATCH = 0, 1, 2


@dataclass(frozen=True)
class _TokenFormat:
    """A single-line credential: `regex` is matched at a prefix's position; its group `secret` (or the whole
    match) is masked. `window`: the most bytes from the prefix to the token's end (bounds the hold-back)."""

    name: str
    prefixes: tuple[bytes, ...]
    regex: re.Pattern[bytes]
    window: int
    caseless: bool = False
    # What any match needs right after its prefix, in Hyperscan syntax (see _Finder: prefixes not followed by
    # it are never looked at, so output made of prefixes alone costs no Python).
    rest: str = ""
    # The byte before the prefix, as the regex's lookbehind wants it (a Hyperscan class; "" for any), and
    # whether the start of the buffer will do too (a negative lookbehind).
    before: str = ""
    before_start: bool = False
    # The token's characters after its prefix (`[A-Za-z0-9]*`), for a token that a fold cut (`fold -w 20`, a
    # narrow column): None for the formats not looked for across lines (headers and parameters).
    body: re.Pattern[bytes] | None = None
    piece: re.Pattern[bytes] | None = None  # a prefix and `body`: a line that may end with a folded token's start
    rest_folded: str = ""  # what else follows the prefix of such a token, for _Finder: a short piece, a line break

    @property
    def tail(self) -> int:
        """A prefix this close to the end of a buffer may still be resolved _MORE (its window is incomplete)."""
        return self.window

    def resolve(self, buf: bytes, p: int, final: bool, nl: int | None = None) -> tuple[int, int, int]:
        """`nl`: the first newline at or after `p` (len(buf) if none), when the caller knows it: a buffer of
        tokens without a newline would otherwise cost a search of the whole window per token."""
        limit = min(len(buf), p + self.window)
        if nl is None:
            newline = buf.find(b"\n", p, limit)
        else:
            newline = nl if nl < limit else -1
        end = newline if newline != -1 else limit
        complete = final or newline != -1 or limit == p + self.window
        m = self.regex.match(buf, p, end)
        if m is not None and (complete or m.end() < end):
            group = "secret" if "secret" in self.regex.groupindex else 0
            return _MATCH, m.start(group), m.end(group)
        if m is None and newline != -1 and self.body is not None:
            return self._folded(buf, p, newline, limit, final or limit == p + self.window)
        return (_NONE, 0, 0) if complete else (_MORE, 0, 0)

    def _folded(self, buf: bytes, p: int, newline: int, limit: int, final: bool) -> tuple[int, int, int]:
        """The token whose line ends too early for it, read across line breaks.

        Only where its line holds nothing but the token from the prefix on (`fold` cut it): then the lines after
        it are joined while each is as long as the prefix's line (the fold's width) and all token characters;
        the first other one is the token's last. The width is known when the line's start lies within
        FOLD_LOOKBACK bytes before the prefix (or at the buffer's start there); otherwise one line is joined.
        The regex decides on the joined text, and its match is masked as one run, line breaks included."""
        cr = 1 if buf[newline - 1:newline] == b"\r" else 0
        if self.piece.fullmatch(buf, p, newline - cr) is None:  # type: ignore[union-attr]
            return _NONE, 0, 0
        lo = max(0, p - FOLD_LOOKBACK)
        start = buf.rfind(b"\n", lo, p) + 1
        width = newline - cr - start if start or lo == 0 else None
        before = max(0, p - 2)  # what the regex's lookbehind reads (`m` of a colour code, `x` glued to it)
        pieces, origin = [buf[before:newline - cr]], [*range(before, newline - cr)]
        line_start = newline + 1
        while True:
            nl = buf.find(b"\n", line_start, limit)
            if nl == -1:
                if not final:
                    return _MORE, 0, 0
                nl = limit
            stop = nl - 1 if nl > line_start and buf[nl - 1] == 0x0D else nl
            pieces.append(buf[line_start:stop])
            origin.extend(range(line_start, stop))
            if (width is None or stop - line_start != width or nl >= limit
                    or self.body.fullmatch(buf, line_start, stop) is None):  # type: ignore[union-attr]
                break  # the token's last line: shorter than the fold, or more than the token on it
            line_start = nl + 1
        joined = b"".join(pieces)
        m = self.regex.match(joined, p - before)
        if m is None or origin[m.end() - 1] < newline:
            return _NONE, 0, 0
        group = "secret" if "secret" in self.regex.groupindex else 0
        return _MATCH, origin[m.start(group)], origin[m.end(group) - 1] + 1


_PEM_HEADER = re.compile(rb"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(rb"-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----")


@dataclass(frozen=True)
class _PemFormat:
    """A PEM private key block, BEGIN line to END line (also with literal `\\n` inside a JSON string)."""

    name: str = "private key (PEM block)"
    prefixes: tuple[bytes, ...] = (b"-----BEGIN ",)
    window: int = 16384
    caseless: bool = False
    rest: str = "[A-Z0-9 ]{0,40}PRIVATE KEY"
    tail: int = 80  # a prefix this close to the end may still become a header (resolve's _MORE)

    def resolve(self, buf: bytes, p: int, final: bool, nl: int | None = None) -> tuple[int, int, int]:
        head = _PEM_HEADER.match(buf, p, min(len(buf), p + 80))
        if head is None:
            decided = final or len(buf) >= p + 80 or buf.find(b"\n", p, p + 80) != -1
            return (_NONE, 0, 0) if decided else (_MORE, 0, 0)
        limit = min(len(buf), p + self.window)
        end = _PEM_END.search(buf, head.end(), limit)
        if end is not None:
            return _MATCH, p, end.end()
        if final or limit == p + self.window:
            # A BEGIN ... PRIVATE KEY with no END in reach: fail closed and mask the whole window.
            return _MATCH, p, limit
        return _MORE, 0, 0


def _token(name: str, prefixes: Iterable[str], pattern: str, rest: str, window: int = 512,
           caseless: bool = False, body: str | None = None) -> _TokenFormat:
    prefixes = tuple(prefixes)
    flags = re.IGNORECASE if caseless else 0
    before, before_start = "", False
    if pattern.startswith(_B):
        # Any non-word byte, or the `m`/`K` ending a colour or erase-line code (a superset of _B's cases: the
        # regex decides).
        before, before_start = "[^A-JL-Za-ln-z0-9_]", True
    elif pattern.startswith(_AFTER_QUERY):
        before = "[?&]"
    rest_folded = ""
    if body is not None:
        # What else the prefilter lets through: a token that a fold cut short (what _folded reads), some of its
        # characters, then a line break.
        assert rest.startswith(body), f"{name}: `rest` must start with `body`"
        rest_folded = f"{body}*\r?\n"
    return _TokenFormat(name, tuple(p.encode() for p in prefixes), re.compile(pattern.encode(), flags), window,
                        caseless, rest, before, before_start,
                        None if body is None else re.compile(body.encode() + b"*"),
                        None if body is None else re.compile(
                            b"(?:" + b"|".join(re.escape(p.encode()) for p in prefixes) + b")" + body.encode() + b"*"),
                        rest_folded)


# Left boundary: a token glued to a longer word (`xghp_...`) is not this format; one right after an ANSI colour or
# erase-line code (`\x1b[32mghp_...`, grep --color's `\x1b[01;31m\x1b[K`) is: the code's `m`/`K` is no word.
_B = r"(?:(?<![A-Za-z0-9_])|(?<=[0-9;\[][mK]))"
_AFTER_QUERY = r"(?<=[?&])"  # a query parameter
# A URL query value or header value: up to a separator, quote, space or bracket.
_VALUE = r"(?P<secret>[^\s&\"'<>#;,)\]}]{8,4096})"
_VALUE_NEED = r"[^\s&\"'<>#;,)\]}]{8}"  # the least of a _VALUE, for the `rest` of a format

FORMATS: tuple[Any, ...] = (
    # GitHub: classic/OAuth/app/user-to-server/refresh tokens (36 base62 chars) and fine-grained PATs.
    _token("GitHub token", ["ghp_", "gho_", "ghs_", "ghu_", "ghr_"], _B + r"gh[pousr]_[A-Za-z0-9]{36,251}",
           r"[A-Za-z0-9]{36}", body="[A-Za-z0-9]"),
    _token("GitHub token", ["github_pat_"], _B + r"github_pat_[A-Za-z0-9_]{22,244}",
           r"[A-Za-z0-9_]{22}", body="[A-Za-z0-9_]"),
    # GitLab: personal/deploy/runner/trigger/CI-build/feed/OAuth-app tokens (prefix kept in their masker).
    _token("GitLab token", ["glpat-", "gldt-", "glrt-", "glptt-", "glcbt-", "glft-", "gloas-", "glsoat-"],
           _B + r"gl(?:pat|dt|rt|ptt|cbt|ft|oas|soat)-[A-Za-z0-9_.-]{20,255}", r"[A-Za-z0-9_.\-]{20}", body=r"[A-Za-z0-9_.\-]"),
    _token("Slack token", ["xoxa-", "xoxb-", "xoxe-", "xoxo-", "xoxp-", "xoxr-", "xoxs-"],
           _B + r"xox[abeoprs]-[A-Za-z0-9-]{10,250}", r"[A-Za-z0-9\-]{10}",
           body=r"[A-Za-z0-9\-]"),
    # AWS access key ids (long-term AKIA, temporary ASIA): exactly 20 characters, not inside a longer word.
    _token("AWS access key id", ["AKIA", "ASIA"], _B + r"A[KS]IA[A-Z2-7]{16}(?![A-Za-z0-9])", r"[A-Z2-7]{16}[^A-Za-z0-9]",
           window=64, body="[A-Z2-7]"),
    _token("Stripe key", ["sk_live_", "rk_live_"], _B + r"[sr]k_live_[A-Za-z0-9]{16,247}",
           r"[A-Za-z0-9]{16}", body="[A-Za-z0-9]"),
    # Package registries and cloud services whose tokens CI jobs hold to publish or deploy (GitHub's secret
    # scanning knows the same shapes): npm, PyPI (upload and test.pypi.org tokens are macaroons whose base64 starts
    # with the site's name), Docker Hub personal and organisation access tokens, Google API keys, HashiCorp Vault
    # service/batch/recovery tokens, OpenAI and Anthropic API keys.
    _token("npm token", ["npm_"], _B + r"npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])", r"[A-Za-z0-9]{36}[^A-Za-z0-9]",
           window=64, body="[A-Za-z0-9]"),
    _token("PyPI token", ["pypi-AgEIcHlwaS5vcmc", "pypi-AgENdGVzdC5weXBpLm9yZw"],
           _B + r"pypi-AgE(?:IcHlwaS5vcmc|NdGVzdC5weXBpLm9yZw)[A-Za-z0-9_-]{50,1000}", r"[A-Za-z0-9_\-]{50}",
           window=1100, body=r"[A-Za-z0-9_\-]"),
    _token("Docker Hub token", ["dckr_pat_", "dckr_oat_"], _B + r"dckr_(?:pat|oat)_[A-Za-z0-9_-]{24,100}",
           r"[A-Za-z0-9_\-]{24}", window=128, body=r"[A-Za-z0-9_\-]"),
    _token("Google API key", ["AIza"], _B + r"AIza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])",
           r"[A-Za-z0-9_\-]{35}[^A-Za-z0-9_\-]", window=64, body=r"[A-Za-z0-9_\-]"),
    _token("Vault token", ["hvs.", "hvb.", "hvr."], _B + r"hv[sbr]\.[A-Za-z0-9_-]{24,500}", r"[A-Za-z0-9_\-]{24}",
           window=600, body=r"[A-Za-z0-9_\-]"),
    _token("OpenAI key", ["sk-proj-", "sk-svcacct-", "sk-admin-"],
           _B + r"sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{32,300}", r"[A-Za-z0-9_\-]{32}", window=400,
           body=r"[A-Za-z0-9_\-]"),
    _token("Anthropic key", ["sk-ant-api03-", "sk-ant-admin01-"],
           _B + r"sk-ant-(?:api03|admin01)-[A-Za-z0-9_-]{32,300}", r"[A-Za-z0-9_\-]{32}", window=400,
           body=r"[A-Za-z0-9_\-]"),
    _PemFormat(),
    # `Authorization: Bearer X`, `-H 'authorization: token X'`, `"Authorization": "Basic X"` (also Proxy-).
    _token("Authorization header", ["authorization"],
           r"authorization[\"']?[ \t]*[:=][ \t]*[\"']?(?:bearer|basic|token|bot|digest)[ \t]+"
           r"(?P<secret>[A-Za-z0-9._~+/=:-]{8,8192})",
           r"[\"']?[ \t]*[:=][ \t]*[\"']?(?:bearer|basic|token|bot|digest)[ \t]+[A-Za-z0-9._~+/=:\-]{8}",
           window=8300, caseless=True),
    # Signed URLs (S3, GCS, Azure SAS) and the credential parameters GitLab's runner masks; query or header.
    _token("signed-URL parameter", ["x-amz-signature", "x-amz-credential", "x-amz-security-token",
                                    "x-goog-signature", "x-goog-credential"],
           r"x-(?:amz|goog)-(?:signature|credential|security-token)(?:=|:[ \t]*)" + _VALUE,
           r"(?:=|:[ \t]*)" + _VALUE_NEED, window=4200, caseless=True),
    _token("signed-URL parameter", ["sig="], _AFTER_QUERY + r"sig=" + _VALUE, _VALUE_NEED, window=4200, caseless=True),
    _token("token parameter", ["private_token", "private-token", "job_token", "job-token", "access_token",
                               "authenticity_token", "feed_token", "rss_token"],
           r"(?:private|job|access|authenticity|feed|rss)[_-]token(?:=|[\"']?[ \t]*:[ \t]*[\"']?)" + _VALUE,
           r"(?:=|[\"']?[ \t]*:[ \t]*[\"']?)" + _VALUE_NEED, window=4200, caseless=True),
)

_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/]*={0,2}")


@dataclass(frozen=True)
class _Base64Of:
    """A token format inside base64: `kubectl get secret -o yaml` prints every value base64-encoded, docker's
    config.json holds `auth` that way, a TLS key is `LS0tLS1CRUdJTi...`. `prefixes` are the characters that
    encode only the inner format's prefix, `shift` bytes into its 3-byte group; at such a hit the run of base64
    characters from the group's start is decoded and the inner format resolved there. The characters from the
    prefix's to the last one carrying a bit of the token are masked."""

    inner: Any
    shift: int
    prefixes: tuple[bytes, ...]
    caseless: bool = False
    rest: str = "[A-Za-z0-9+/]{8}"
    before: str = ""
    before_start: bool = False
    # The token in UTF-16LE before the encoding: PowerShell's `-EncodedCommand` (a command line so encoded).
    wide: bool = False

    @property
    def name(self) -> str:
        return f"{self.inner.name} (base64 of UTF-16)" if self.wide else f"{self.inner.name} (base64)"

    @property
    def window(self) -> int:
        return -(-self.inner.window * (8 if self.wide else 4) // 3) + 4

    @property
    def tail(self) -> int:
        return self.window

    def resolve(self, buf: bytes, p: int, final: bool, nl: int | None = None) -> tuple[int, int, int]:
        g = p - -(-8 * self.shift // 6)  # where the prefix's 3-byte group starts
        if g < 0:
            return _NONE, 0, 0  # its first characters were emitted before this buffer: not this format here
        limit = min(len(buf), g + self.window)
        end = _BASE64_RUN.match(buf, g, limit).end()  # type: ignore[union-attr]
        complete = final or end < len(buf) or end == g + self.window
        usable = (end - g) // 4 * 4
        try:
            decoded = base64.b64decode(buf[g:g + usable])
        except ValueError:  # `=` inside the run: not one encoding
            return _NONE, 0, 0
        text, at, parity = decoded, self.shift, 0
        if self.wide:
            # The token's characters are ASCII: every other byte from its first, each followed by a NUL.
            parity = self.shift % 2
            text, at = decoded[parity::2], self.shift // 2
        status, start, stop = self.inner.resolve(text, at, complete and usable == end - g)
        if status == _MORE and complete:
            status, start, stop = self.inner.resolve(text, at, True)
        if status != _MATCH:
            return status, 0, 0
        if self.wide:
            if decoded[2 * start + parity + 1:2 * stop + parity:2].strip(b"\0"):
                return _NONE, 0, 0  # not UTF-16 text there: a high byte that is not NUL
            start, stop = 2 * start + parity, 2 * stop + parity
        # From the prefix's own characters on (those before it carry the bytes before the token, and a stream may
        # have emitted them already), to the last character carrying a bit of the token.
        return _MATCH, max(p, g + start * 4 // 3), min(end, g + -(-stop * 4 // 3))


def _base64_prefixes(prefix: bytes, shift: int) -> bytes:
    """The base64 characters that encode only `prefix` when it starts `shift` bytes into a 3-byte group."""
    encoded = base64.b64encode(b"\0" * shift + prefix)
    return encoded[-(-8 * shift // 6):(8 * (shift + len(prefix))) // 6]


def _utf16(prefix: bytes) -> bytes:
    return prefix.decode("ascii").encode("utf-16-le")


# The token formats also looked for in base64 (their prefixes are exact; the header formats' are not tokens), and
# in the base64 of UTF-16LE text (PowerShell's -EncodedCommand): 3 alignments each.
BASE64_FORMATS: tuple[Any, ...] = tuple(
    _Base64Of(fmt, shift, tuple(_base64_prefixes(_utf16(p) if wide else p, shift) for p in fmt.prefixes), wide=wide)
    for wide in (False, True) for fmt in FORMATS if not fmt.caseless for shift in range(3))


def _spellings(prefix: bytes) -> list[bytes]:
    """The spellings of a caseless prefix that tools print: lower, UPPER, Capitalized, Dash-Capitalized.

    Why not a caseless search: on the CI log of the benchmark, Hyperscan scans these ~80 exact literals at about
    twice the speed of the ~40 caseless ones (4.6 vs 2.0 GB/s), and ahocorasick-rs needs no lower-cased copy.
    The format's own regex is still caseless; only an odd spelling (`AuThOrIzAtIoN`) goes unseen.
    """
    low = prefix.lower()
    title = b"".join(word.capitalize() for word in re.split(rb"([-_])", low))
    return sorted({low, low.upper(), low.capitalize(), title})


# Every literal the prefilter looks for, and the format(s) it starts.
_PREFIXES: list[bytes] = []
_STARTS: list[tuple[Any, ...]] = []
for _fmt in (*FORMATS, *BASE64_FORMATS):
    for _p in _fmt.prefixes:
        for _key in _spellings(_p) if _fmt.caseless else [_p]:
            if _key in _PREFIXES:
                _STARTS[_PREFIXES.index(_key)] += (_fmt,)
            else:
                _PREFIXES.append(_key)
                _STARTS.append((_fmt,))
# Public for the masker, whose base database finds them in the same pass as the secrets (find_with_known).
PREFIXES: tuple[bytes, ...] = tuple(_PREFIXES)
MAX_PREFIX = max(len(p) for p in _PREFIXES)
# Proper prefixes of every literal: a write ending in one of these holds it for the next write.
_PARTIAL = frozenset(p[:k] for p in _PREFIXES for k in range(1, len(p)))


class _Finder:
    """The prefilter: positions (start, literal index) of the prefix literals that can start a match in a buffer.

    With Hyperscan, in a buffer with more than DENSE_HITS prefixes, a prefix is reported only where it is followed by what its format needs (`rest`: `ghp_` by 36
    letters or digits) - or within its format's `tail` of the end of the buffer, where the next write may still
    complete it. A prefix reported nowhere else would have resolved to no match, so the answer is the same as
    with every occurrence, but output made of prefixes alone (`ghp_ghp_...`, `AKIA` repeated: 16,000 hits in a
    64 KiB write, each a Python callback and a regex) costs no Python: measured 2.8 MB/s before, see
    bench/bench_known_formats.py. The ahocorasick-rs fallback reports every occurrence (`find_literal`).
    """

    engine = "none"

    def __init__(self) -> None:
        self._hs: Any = None
        try:
            if os.environ.get(ENGINE_ENV, "hyperscan") != "hyperscan":
                raise ImportError(f"{ENGINE_ENV} asks for another engine")
            import hyperscan

            self._hyperscan = hyperscan
            self._hs = self._compile([re.escape(p.decode()).encode() for p in _PREFIXES], range(len(_PREFIXES)))
            # The viable and tail databases are compiled at the first dense write (60 ms of CPU, a third of
            # `runnerlib mask`'s start-up otherwise).
            self._viable: Any = None
            self._tails: list[tuple[Any, int]] = []
            self._dense_lock = threading.Lock()
            # Hyperscan forbids two concurrent scans sharing one scratch; steps run in parallel threads.
            self._local = threading.local()
            self.engine = "hyperscan"
        except Exception:  # noqa: BLE001 - not installed, or no wheel for this platform: fall back
            import ahocorasick_rs

            self._hs = None
            self._ac = ahocorasick_rs.BytesAhoCorasick(_PREFIXES)
            self.engine = "ahocorasick"

    def _compile_dense(self) -> None:
        with self._dense_lock:
            if self._viable is not None:
                return
            # Id 2i: prefix i starts where the match does; 2i+1: one byte later (the byte before is matched).
            viable, ids = [], []
            for i, (prefix, fmts) in enumerate(zip(_PREFIXES, _STARTS, strict=True)):
                for fmt in fmts:
                    body = re.escape(prefix.decode()) + ("(?i)" if fmt.caseless else "") + fmt.rest
                    before = getattr(fmt, "before", "")
                    if before:
                        viable.append((before + body).encode())
                        ids.append(2 * i + 1)
                    if not before or getattr(fmt, "before_start", False):
                        viable.append((("^" if before else "") + body).encode())
                        ids.append(2 * i)
            # The tail scans: prefixes of short-window formats over the last SHORT_TAIL bytes only, the others
            # over their longer tail, so a tail full of short prefixes costs few callbacks.
            short = [i for i in range(len(_PREFIXES)) if _TAILS[i] <= SHORT_TAIL]
            longer = [i for i in range(len(_PREFIXES)) if _TAILS[i] > SHORT_TAIL]
            self._tails = [(self._compile([re.escape(_PREFIXES[i].decode()).encode() for i in group], group),
                            max(_TAILS[i] for i in group) + MAX_PREFIX) for group in (short, longer) if group]
            # A prefix that ends its line with part of a token (_TokenFormat._folded): reported at the line break
            # (no start: a start costs a third more on spam), the prefix found again in Python.
            folds = [(i, getattr(fmt, "rest_folded", "")) for i, fmts in enumerate(_STARTS) for fmt in fmts]
            self._folds = self._compile([re.escape(_PREFIXES[i].decode()).encode() + rest.encode()
                                         for i, rest in folds if rest], [i for i, rest in folds if rest])
            # Reported with their start (SOM): the rest of a format has no fixed length. Published last: a
            # reader that sees it sees the tails and folds too.
            self._viable = self._compile(viable, ids, self._hyperscan.HS_FLAG_SOM_LEFTMOST)

    def _compile(self, expressions: list[bytes], ids: Iterable[int], flags: int = 0) -> Any:
        hs = self._hyperscan
        ids = list(ids)
        db = hs.Database(mode=hs.HS_MODE_BLOCK)
        db.compile(expressions=expressions, ids=ids, elements=len(ids), flags=[flags] * len(ids))
        return db

    def _scratch(self, db: Any) -> Any:
        scratches = getattr(self._local, "scratches", None)
        if scratches is None:
            scratches = self._local.scratches = {}
        scratch = scratches.get(id(db))
        if scratch is None:
            scratch = scratches[id(db)] = self._hyperscan.Scratch(db)
        return scratch

    def find_literal(self, data: bytes) -> list[tuple[int, int]]:
        """Every occurrence of every prefix literal."""
        if self._hs is not None:
            hits: list[tuple[int, int]] = []
            self._hs.scan(data, match_event_handler=_on_match, context=hits, scratch=self._scratch(self._hs))
            return hits
        return [(start, index) for index, start, _end in self._ac.find_matches_as_indexes(data, overlapping=True)]

    def find(self, data: bytes) -> list[tuple[int, int]]:
        """The prefix occurrences that can start a match, or be completed by the next write (see the class)."""
        if self._hs is None:
            return self.find_literal(data)
        # The common case first, at the literal scan's full speed: a few prefixes, all of them reported. Past
        # DENSE_HITS the literal scan stops and the viable scan (slower per byte: it tracks match starts) runs.
        hits: list[tuple[int, int]] = []
        try:
            self._hs.scan(data, match_event_handler=_on_match_dense, context=hits, scratch=self._scratch(self._hs))
            return hits
        except self._hyperscan.ScanTerminated:
            return self.find_viable(data)

    def find_viable(self, data: bytes) -> list[tuple[int, int]]:
        """The prefixes followed by what their format needs, and every prefix in the tail (Hyperscan only)."""
        if self._viable is None:
            self._compile_dense()
        # A list, not a set: a duplicate (two formats of one prefix) is resolved once, then skipped as covered.
        found: list[tuple[int, int]] = []
        self._viable.scan(data, match_event_handler=_on_viable, context=found, scratch=self._scratch(self._viable))
        if b"\n" in data:  # the fold scan (0.6 ms a 64 KiB write of `xoxb-` chains) needs a line break
            ends: list[tuple[int, int]] = []
            self._folds.scan(data, match_event_handler=_on_match, context=ends, scratch=self._scratch(self._folds))
            for end, i in ends:  # `end`: where the match ends, less the prefix's length
                found.extend(_folded_starts(data, end + _LENGTHS[i], i))
        n = len(data)
        for db, span in self._tails:
            lo = max(0, n - span)
            tail: list[tuple[int, int]] = []
            db.scan(data[lo:] if lo else data, match_event_handler=_on_match, context=tail, scratch=self._scratch(db))
            found.extend((lo + p, i) for p, i in tail if lo + p >= n - _TAILS[i])
        return found


def _folded_starts(data: bytes, stop: int, i: int) -> list[tuple[int, int]]:
    """(start, i) of each prefix `i` on the line ending at `stop` (past its line break), where _Finder's fold scan
    found one followed by token characters only: a superset (the scan reports no start), each format's resolve
    decides."""
    line = data.rfind(b"\n", 0, stop - 1) + 1
    prefix, out = _PREFIXES[i], []
    p = data.find(prefix, line, stop)
    while p != -1:
        out.append((p, i))
        p = data.find(prefix, p + 1, stop)
    return out


def _on_match_dense(index: int, _from: int, to: int, _flags: int, hits: Any) -> bool:
    hits.append((to - _LENGTHS[index], index))
    return len(hits) > DENSE_HITS  # True stops the scan


def _on_viable(index: int, start: int, _to: int, _flags: int, found: Any) -> None:
    found.append((start + (index & 1), index >> 1))


def _on_match(index: int, _from: int, to: int, _flags: int, hits: Any) -> None:
    hits.append((to - _LENGTHS[index], index))


_LENGTHS = [len(p) for p in _PREFIXES]
_PREFIX_BYTES = frozenset(b"".join(_PREFIXES))
# How close to the end of a buffer each prefix may still resolve _MORE (the longest tail of its formats).
_TAILS = [max(fmt.tail for fmt in fmts) for fmts in _STARTS]
SHORT_TAIL = 512
# Past this many prefixes in one buffer, only those that can start a match are looked at (see _Finder).
DENSE_HITS = 64
_finder: _Finder | None = None


def literal_hits(data: bytes | memoryview) -> list[tuple[int, int]] | None:
    """(start, prefix index) of every prefix literal in `data`, or None past DENSE_HITS of them: the answer
    `write_scanned` takes, from a scan run where it costs least (the masker's helper thread)."""
    finder = _get_finder()
    if finder._hs is None:
        return None  # the ahocorasick-rs fallback: the stage scans for itself
    hits: list[tuple[int, int]] = []
    try:
        finder._hs.scan(data, match_event_handler=_on_match_dense, context=hits, scratch=finder._scratch(finder._hs))
    except finder._hyperscan.ScanTerminated:
        return None
    return hits


def _get_finder() -> _Finder:
    global _finder
    if _finder is None:
        _finder = _Finder()
    return _finder


def engine() -> str:
    """The prefilter in use: "hyperscan" or "ahocorasick"."""
    return _get_finder().engine


def _partial_tail(data: bytes) -> int:
    """Length of the longest tail of `data` that is a proper prefix of a known prefix (0 if none)."""
    tail = data[-(MAX_PREFIX - 1):]
    for k in range(len(tail), 0, -1):
        if tail[-k:] in _PARTIAL:
            return k
    return 0


def _resolve(buf: bytes, base: int, final: bool, partial: bool = True,
             hits: list[tuple[int, int]] | None = None) -> tuple[int, list[tuple[int, int]], list[str]]:
    """Scan `buf` (its first `base` bytes already emitted): (cut, spans to mask, names of the formats matched).

    Bytes before `cut` are final; the rest is held. Spans are clipped to [base, cut). `partial`: also hold a
    tail that could still become a prefix (not on an idle flush: the context recognises it later)."""
    hits = sorted(_get_finder().find(buf) if hits is None else hits)
    cut = len(buf)
    spans: list[tuple[int, int]] = []
    names: list[str] = []
    covered = 0
    nl = -1  # the first newline at or after the current hit (len(buf) if none): one pass for all hits
    for p, index in hits:
        if p + len(_PREFIXES[index]) <= base or p < covered or p >= cut:
            continue  # resolved before it was emitted, inside a match already, or behind a held token
        if nl < p:
            nl = buf.find(b"\n", p)
            if nl == -1:
                nl = len(buf)
        for fmt in _STARTS[index]:
            status, start, end = fmt.resolve(buf, p, final, nl)
            if status == _MORE:
                cut = min(cut, max(p, base))
                break
            if status == _MATCH and end > max(start, base):
                spans.append((max(start, base), end))
                names.append(fmt.name)
                covered = max(covered, end)
                break
    if partial and not final and cut == len(buf):
        cut = max(base, cut - _partial_tail(buf[max(base, cut - MAX_PREFIX):]))
    # A match crossing the cut is found again with the held bytes next time: emit nothing of it yet.
    for start, end in spans:
        if start < cut < end:
            cut = start
    return cut, [(s, min(e, cut)) for s, e in spans if s < cut], names


def _render(buf: bytes, start: int, cut: int, spans: list[tuple[int, int]], replacement: bytes,
            after_mask: bool = False) -> tuple[bytes, bool]:
    """buf[start:cut] with each run of spans replaced once; whether it ends with a replacement. `after_mask`:
    the previous emission ended with one, which a span at `start` continues (as in the whole output)."""
    out = bytearray()
    pos = start
    last_end = start if after_mask else -1
    for s, e in sorted(spans):
        if s < pos:
            s = pos
        if e <= s:
            continue
        out += buf[pos:s]
        if s != last_end:
            out += replacement
        pos = last_end = e
    out += buf[pos:cut]
    return bytes(out), last_end == cut


def mask_known_formats(data: bytes, *, replacement: bytes = REPLACEMENT) -> tuple[bytes, list[str]]:
    """The whole of `data` with every known credential format masked, and the names of the formats found.

    >>> mask_known_formats(b"token ghp_" + b"a" * 36 + b" ok")[0]
    b'token *** ok'
    """
    cut, spans, names = _resolve(data, 0, True)
    return _render(data, 0, cut, spans, replacement)[0], names


def mask_known_formats_text(text: str, replacement: str = "***") -> str:
    """`mask_known_formats` for str (UTF-8 with surrogateescape round-trip); for log lines."""
    data = text.encode("utf-8", "surrogateescape")
    if not _get_finder().find(data):
        return text
    masked, _names = mask_known_formats(data, replacement=replacement.encode("utf-8", "surrogateescape"))
    return masked.decode("utf-8", "surrogateescape")


class NoticeOnce:
    """A `notice` callback that reports each format once (share one between a step's stdout and stderr)."""

    def __init__(self, report: Callable[[str], Any]) -> None:
        self._report = report
        self._seen: set[str] = set()

    def __call__(self, name: str) -> None:
        if name not in self._seen:
            self._seen.add(name)
            article = "an" if name[0] in "AEIOUaeiou" or name.startswith("npm") else "a"  # "an npm token"
            self._report(f"masked {article} {name} (known format)")


class KnownFormatsFilter(Stage):
    """write(bytes) / flush() / flush_idle() / close(): masks known credential formats, forwards to `sink`.

    `sink` is a stream with write() (flush()/flush_idle()/close() passed on when present, `held` read by
    `pump`) or a callable taking bytes. `notice(name)` is called with a format's name at every match (wrap it
    in NoticeOnce for one line per format). Single writer, like any stream.

    Example::

        masked = registry.stream(out.write)
        stage = KnownFormatsFilter(masked, notice=NoticeOnce(log.warning))
        for chunk in output:
            stage.write(chunk)
        stage.close()                  # closes `masked` too
    """

    def __init__(self, sink: Any, *, notice: Callable[[str], Any] | None = None,
                 replacement: bytes | str = REPLACEMENT) -> None:
        super().__init__(sink)
        self._notice = notice
        self.replacement = replacement.encode() if isinstance(replacement, str) else bytes(replacement)
        self._finder = _get_finder()
        self._pending = b""   # not yet emitted
        self._pending_partial = False  # `_pending` is only a tail that could start a prefix (no token in it)
        self._after_mask = False       # the last bytes emitted were a replacement (a span there continues it)
        self._context = b""   # the last bytes emitted, original (unmasked): never written again
        # The emitted bytes end with a possible prefix start: the next write is scanned with the context.
        self._released_partial = False
        self._closed = False
        self.replacement_safe = False  # see masked_with

    @property
    def held(self) -> int:
        """Bytes held here or by the sink (so `pump` keeps polling for the idle flush)."""
        return len(self._pending) + int(getattr(self._sink, "held", 0) or 0)

    def write(self, data: bytes, hits: list[tuple[int, int]] | None = None) -> None:
        """Mask and forward `data`. `hits`: what the prefilter's `find(data)` would answer, when the caller
        already knows it (the masker's one pass: MaskSnapshot.find_with_known); None to scan here."""
        if self._closed:
            raise ValueError("write to a closed KnownFormatsFilter")
        if not data:
            return
        data = bytes(data)
        if (self._pending_partial or self._released_partial) and len(data) >= MAX_PREFIX:
            # Only a possible prefix start is held (or was released by an idle flush): look at the seam alone
            # rather than copying and rescanning the whole write with it.
            before = self._context + self._pending
            base, seam = len(self._context), len(before)
            if not any(p < seam and p + _LENGTHS[i] > base
                       for p, i in self._finder.find_literal(before + data[:MAX_PREFIX])):
                self._emit(self._pending)
                self._pending = b""
                self._pending_partial = self._released_partial = False
        if not self._pending and not self._released_partial:
            if hits is None:
                hits = self._finder.find(data)
            if not hits:
                # Bulk output: no prefix in this write; hold only a tail that could become one.
                tail = _partial_tail(data)
                if tail:
                    self._emit(data[:-tail])
                    self._pending = data[-tail:]
                    self._pending_partial = True
                else:
                    self._emit(data)
                return
            shift = len(self._context)
            self._process(data, final=False, hits=[(p + shift, i) for p, i in hits])
            return
        # A token in progress, or a short write after a possible prefix start: scan with the context.
        self._process(self._pending + data, final=False)

    def write_scanned(self, data: bytes, hits: list[tuple[int, int]], kept: list[tuple[int, int, int]]) -> None:
        """`write(data)` for the masked output `data` of a buffer whose prefix literals `hits` (the prefilter's
        literal answer, at most DENSE_HITS of them) are known; `kept`: (start, stop, offset in data) of each run
        of the buffer that `data` holds unchanged, in order. A hit wholly inside such a run is data's, moved; one
        that was masked is gone. No other prefix is in `data` when no prefix holds a byte of the masker's
        replacement (`masked_with`): the rest of `data` is replacements. Otherwise the stage scans for itself."""
        if not self.replacement_safe and (len(kept) != 1 or kept[0][1] - kept[0][0] != len(data)):
            self.write(data)  # something was masked with bytes a prefix holds
            return
        lengths = _LENGTHS
        moved: list[tuple[int, int]] = []
        for p, i in sorted(hits):
            for start, stop, offset in kept:
                if start <= p and p + lengths[i] <= stop:
                    moved.append((offset + p - start, i))
                    break
        self.write(data, moved)

    def masked_with(self, replacement: bytes) -> None:
        """Say what the stage before this one replaces secrets with (see write_scanned)."""
        self.replacement_safe = not set(replacement) & _PREFIX_BYTES

    def _process(self, pending: bytes, *, final: bool, idle: bool = False,
                 hits: list[tuple[int, int]] | None = None) -> None:
        buf = self._context + pending
        base = len(self._context)
        cut, spans, names = _resolve(buf, base, final, partial=not idle, hits=hits)
        self._pending_partial = False  # what stays held may be a token in progress: the next write rescans it
        if self._notice is not None:
            for name in names:
                self._notice(name)
        if cut > base:
            text, self._after_mask = _render(buf, base, cut, spans, self.replacement, self._after_mask)
            self._write(text)
            self._context = buf[max(0, cut - CONTEXT):cut]
            # After an idle flush (or a cut before a held token) the emitted bytes may end with a prefix's start.
            self._released_partial = bool(_partial_tail(self._context))
        self._pending = buf[cut:]

    def _emit(self, data: bytes) -> None:
        if data:
            self._write(data)
            self._context = (self._context + data[-CONTEXT:])[-CONTEXT:]
            self._after_mask = False

    def flush_idle(self) -> None:
        """The idle flush: release a possible prefix start (never a token whose prefix is complete)."""
        if self._pending:
            self._process(self._pending, final=False, idle=True)
        flush_idle = getattr(self._sink, "flush_idle", None)
        if flush_idle is not None:
            flush_idle()

    def flush_if_idle(self, seconds: float) -> None:
        """For the step pump: release as flush_idle(), then let the sink decide on its own idle flush."""
        if self._pending:
            self._process(self._pending, final=False, idle=True)
        hook = getattr(self._sink, "flush_if_idle", None)
        if hook is not None:
            hook(seconds)

    def close(self) -> None:
        """End of stream: resolve and emit everything held (masked), then close the sink."""
        if self._closed:
            return
        self._closed = True
        if self._pending:
            self._process(self._pending, final=True)
            self._pending = b""
        self._close_sink()


class MaskedThenKnown:
    """`registry.stream(sink)` followed by a KnownFormatsFilter: the stream a step's output goes through.

    Registered secrets first: a registered secret that contains a token (a DSN with `?sig=...`, a header value
    registered whole) is masked whole by the registry's union masking; masking the token first would change
    the occurrence, and the rest of the secret would pass unmasked. Offers what `pump` and the step pump use:
    write, held, flush, flush_idle, flush_if_idle, close (which closes both).
    """

    def __init__(self, registry: Any, sink: Any, *, notice: Callable[[str], Any] | None = None,
                 replacement: bytes | str = REPLACEMENT) -> None:
        self.known = KnownFormatsFilter(sink, notice=notice, replacement=replacement)
        self.masked = registry.stream(self.known.write)
        # What the masker passes on comes with the known-format prefixes its own pass found.
        self.masked.scanned_sink = self.known.write_scanned
        replacement_of = getattr(registry, "replacement", None)
        if isinstance(replacement_of, str):
            self.known.masked_with(replacement_of.encode("utf-8"))

    @property
    def bytes_in(self) -> int:
        """Bytes written into the masker (the step's output size, for its resource profile)."""
        return int(getattr(self.masked, "bytes_in", 0))

    @property
    def held(self) -> int:
        """Bytes held by the masker or by the known-formats stage."""
        return int(self.masked.held) + self.known.held

    def write(self, data: bytes) -> None:
        self.masked.write(data)

    def flush(self) -> None:
        self.masked.flush()
        self.known.flush()

    def flush_idle(self) -> None:
        self.masked.flush_idle()
        self.known.flush_idle()

    def flush_if_idle(self, seconds: float) -> None:
        self.masked.flush_if_idle(seconds)
        if self.known.held:
            self.known.flush_idle()

    def close(self) -> None:
        self.masked.close()
        self.known.close()
