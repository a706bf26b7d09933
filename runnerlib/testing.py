"""Hypothesis strategies and assertions for leak testing, public so users can property-test their own jobs.

A masker is right when, for any set of secrets, any text and any way of cutting it into writes, its
streamed output equals the obviously-correct masking of the whole text, and no piece of a planted secret
survives. The strategies here generate the hard cases: secrets that are prefixes, suffixes and overlaps of
each other, repeated prefixes (`abab` + `ab1234` for `abab1234`), binary bytes, texts full of near-misses,
and write splits at every offset.

Example (pytest + hypothesis)::

    from hypothesis import given, strategies as st
    from runnerlib.testing import (secret_sets, texts_with_secrets, write_splits, stream_through,
                                   reference_mask, assert_no_fragment)

    @given(st.data())
    def test_my_sink_never_leaks(data):
        secrets = data.draw(secret_sets())
        registry = SecretRegistry(); registry.add_many(secrets, source="test")
        planted = data.draw(texts_with_secrets(secrets))
        chunks = data.draw(write_splits(planted.data))
        out = stream_through(registry, chunks)
        assert out == reference_mask(planted.data, registry.patterns(), line_starts=registry.line_starts())
        assert_no_fragment(out, planted.secrets, allowed=planted.clear)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

from runnerlib.security.inband import MAX_INDENT, PREFIX, command_values
from runnerlib.security.masker import reference_mask

__all__ = [
    "PlantedText",
    "add_mask_reference",
    "assert_no_fragment",
    "reachable_tempdir",
    "reference_mask",
    "secret_sets",
    "secrets",
    "stream_through",
    "texts_with_secrets",
    "write_splits",
]

# Small alphabets make secrets collide, overlap and share prefixes, which is where maskers leak. The
# replacement's `*` is left out so a replacement can never be mistaken for a fragment.
ALPHABETS: tuple[bytes, ...] = (
    b"ab",
    b"ab1",
    b"abc\n",
    b"aA0 \r\n",
    b"x\x00\xff\x1b[m",  # NUL, invalid UTF-8, ANSI escape bytes
    bytes(b for b in range(256) if b != ord("*")),
)


def secrets(alphabet: bytes | None = None, *, min_length: int = 4, max_length: int = 12) -> st.SearchStrategy[bytes]:
    """One secret value: bytes of `alphabet` (default: one of ALPHABETS), at least `min_length` long and not
    only whitespace (a registry ignores those)."""
    alpha = st.sampled_from(ALPHABETS) if alphabet is None else st.just(alphabet)
    return alpha.flatmap(
        lambda a: st.binary(min_size=min_length, max_size=max_length).map(
            lambda raw: bytes(a[b % len(a)] for b in raw)
        )
    ).filter(lambda s: bool(s.strip()))


@st.composite
def secret_sets(draw: st.DrawFn, *, min_length: int = 4, max_secrets: int = 6) -> list[bytes]:
    """A list of distinct secrets built to relate to each other: base secrets plus prefixes, suffixes,
    overlapping joins, repeated prefixes and embedded copies of them."""
    alphabet = draw(st.sampled_from(ALPHABETS))
    base = draw(st.lists(secrets(alphabet, min_length=min_length), min_size=1, max_size=3, unique=True))
    out = list(base)
    for _ in range(draw(st.integers(0, max_secrets - len(base)))):
        s = draw(st.sampled_from(out))
        t = draw(st.sampled_from(out))
        k = draw(st.integers(1, max(1, len(s) - 1)))
        kind = draw(st.sampled_from(["prefix", "suffix", "overlap", "repeat", "embed"]))
        if kind == "prefix":
            new = s[:k]
        elif kind == "suffix":
            new = s[k:]
        elif kind == "overlap":  # t's head glued to s's tail: occurrences of s and new overlap
            new = s[k:] + t
        elif kind == "repeat":  # abab1234 from ab1234: the repeated-prefix case
            new = s[:k] + s
        else:
            new = draw(st.binary(max_size=2)) + s + draw(st.binary(max_size=2))
        if len(new) >= min_length and new.strip() and b"*" not in new and new not in out:
            out.append(new)
    return out


@dataclass(frozen=True)
class PlantedText:
    """A generated text: `data`, the secret forms planted in it, and the runs of it that are not planted
    (filler and near-misses), which may legitimately remain in the output."""

    data: bytes
    secrets: tuple[bytes, ...]
    clear: tuple[bytes, ...]


@st.composite
def texts_with_secrets(draw: st.DrawFn, secret_values: Sequence[bytes], *, max_pieces: int = 12,
                       forms: bool = False) -> PlantedText:
    """A text mixing whole secrets with filler and near-misses (prefixes, suffixes, a secret with one byte
    changed). With `forms=True`, planted secrets may also be encoded forms (see security.variants); a form one
    character a line begins a line, where it counts."""
    line_starts: set[bytes] = set()
    if forms:
        from runnerlib.security.variants import secret_forms

        pool = []
        for value in secret_values:
            masked, _, lines = secret_forms(value)
            pool += [*masked, *lines]
            line_starts.update(lines)
    else:
        pool = list(secret_values)
    filler_alpha = bytes(sorted({b for s in secret_values for b in s} | set(b"xyz \n")))
    pieces: list[tuple[bool, bytes]] = []
    for _ in range(draw(st.integers(0, max_pieces))):
        kind = draw(st.sampled_from(["secret", "filler", "prefix", "suffix", "mutant"]))
        s = draw(st.sampled_from(pool)) if pool else b""
        if kind == "secret" and s:
            if s in line_starts:  # a form `fold -w1` prints counts where it begins a line (masker.NewlineHeads)
                pieces.append((False, b"\n"))
            pieces.append((True, s))
        elif kind == "filler" or not s:
            raw = draw(st.binary(max_size=8))
            pieces.append((False, bytes(filler_alpha[b % len(filler_alpha)] for b in raw)))
        elif kind == "prefix":
            pieces.append((False, s[: draw(st.integers(0, len(s) - 1))]))
        elif kind == "suffix":
            pieces.append((False, s[draw(st.integers(1, len(s))):]))
        else:
            i = draw(st.integers(0, len(s) - 1))
            pieces.append((False, s[:i] + bytes([s[i] ^ 1]) + s[i + 1:]))
    clear: list[bytes] = []
    run = b""
    for planted, piece in pieces:
        if planted:
            if run:
                clear.append(run)
            run = b""
        else:
            run += piece
    if run:
        clear.append(run)
    return PlantedText(b"".join(p for _, p in pieces), tuple(p for planted, p in pieces if planted),
                       tuple(clear))


def write_splits(data: bytes, *, max_writes: int = 20) -> st.SearchStrategy[list[bytes]]:
    """Ways of cutting `data` into consecutive writes (empty writes included), at any offsets."""
    cuts = st.lists(st.integers(0, len(data)), max_size=max_writes).map(sorted)
    return cuts.map(lambda c: [data[a:b] for a, b in zip([0, *c], [*c, len(data)], strict=True)])


def stream_through(registry: object, chunks: Iterable[bytes], *, flush_every: int | None = None) -> bytes:
    """Write `chunks` to `registry.stream(...)`, close it, and return everything the sink received."""
    out: list[bytes] = []
    stream = registry.stream(out.append)  # type: ignore[attr-defined]
    for i, chunk in enumerate(chunks):
        stream.write(chunk)
        if flush_every and i % flush_every == flush_every - 1:
            stream.flush()
    stream.close()
    return b"".join(out)


def known_stage_through(registry: object, chunks: Iterable[bytes], *, one_pass: bool = True,
                        idle: bool = False) -> tuple[bytes, list[str]]:
    """Write `chunks` through a step's masking and known-format stages (MaskedThenKnown), close them, and return
    (the output, the names of the formats noticed). one_pass=False: the known-format stage scans every write
    itself, as before the masker's single pass told it where a token may start; idle: flush after each write."""
    from runnerlib.security.known_formats import MaskedThenKnown

    out: list[bytes] = []
    names: list[str] = []
    stage = MaskedThenKnown(registry, out.append, notice=names.append)
    if not one_pass:
        stage.masked.scanned_sink = None
    for chunk in chunks:
        stage.write(chunk)
        if idle:
            stage.flush_idle()
    stage.close()
    return b"".join(out), names


def assert_no_fragment(output: bytes, secret_values: Iterable[bytes], *, min_fragment: int = 4,
                       allowed: Iterable[bytes] = ()) -> None:
    """Fail if `output` contains any `min_fragment`-byte piece of any secret (a whole secret included),
    unless that piece also occurs in one of `allowed` (text that was never secret, e.g. PlantedText.clear).

    The message gives the secret's index and the fragment's offset, never the bytes.
    """
    allowed = list(allowed)
    for index, secret in enumerate(secret_values):
        k = min(min_fragment, len(secret))
        for i in range(len(secret) - k + 1):
            fragment = secret[i:i + k]
            if fragment in output and not any(fragment in a for a in allowed):
                raise AssertionError(
                    f"output contains bytes {i}..{i + k} of secret #{index} ({len(secret)} bytes long)"
                )


_ADD_MASK_LINE = re.compile(rb"^[ \t]{0,%d}::add-mask::(.*)$" % MAX_INDENT, re.I | re.S)


def add_mask_reference(data: bytes) -> tuple[bytes, list[bytes]]:
    """The `::add-mask::` specification on one whole input: (output without the commands, the values a
    trusted step registers, each unescaped and, when that differs, also as written). A command at a line start
    (up to MAX_INDENT blanks before it) takes its whole line; one within a line takes the rest of that line,
    and the text before it and the line break stay. A streaming filter fed `data` in any split must give the
    same.

    >>> add_mask_reference(b"a\n::add-mask::s3cr%25t\nb")
    (b'a\nb', [b's3cr%t', b's3cr%25t'])
    """
    out = bytearray()
    registered: list[bytes] = []
    lines = data.split(b"\n")
    for index, line in enumerate(lines):
        newline = b"" if index == len(lines) - 1 else b"\n"
        match = _ADD_MASK_LINE.match(line)
        within = line.lower().find(PREFIX)
        if match:  # a command line: gone whole
            value = match.group(1)
        elif within >= 0:  # a command within a line: the text before it and the line break stay
            out += line[:within] + newline
            value = line[within + len(PREFIX):]
        else:
            out += line + newline
            continue
        registered += command_values(value)
    return bytes(out), registered


@contextlib.contextmanager
def reachable_tempdir(prefix: str = "runnerlib-", dir: str | None = None) -> Iterator[Path]:
    """A fresh directory outside pytest's 0700 tmp dir, mode 0755 so that a step running as another uid (the
    sandbox's 65534 when root) can enter it; removed with everything in it afterwards. `dir`: where (default
    the temp dir; /var/tmp for a file an untrusted step could only reach through a grant, since untrusted
    steps get a private /tmp).

    Example::

        with reachable_tempdir("rl-ws-") as root:
            run_job(command="make test", source_dir=str(root / "src"), ...)
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    try:
        os.chmod(path, 0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
