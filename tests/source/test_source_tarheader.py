"""FastTarInfo.frombuf must give exactly what tarfile.TarInfo.frombuf gives: the same fields or the same error.

Headers come from tarfile itself (every type, format, odd numbers and names), then mutated (random bytes
written anywhere, with the checksum made right again so the fast path has to judge them), and random
blocks. A difference would mean the extraction rules look at something other than what tarfile parsed.
"""

from __future__ import annotations

import io
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runnerlib.source.tarheader import FastTarInfo

SLOTS = tuple(tarfile.TarInfo.__slots__)
TYPES = [tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE,
         tarfile.DIRTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK,
         tarfile.GNUTYPE_SPARSE, tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, b"V", b"Z"]
CODECS = [("utf-8", "surrogateescape"), ("utf-8", "strict"), ("ascii", "strict"), ("latin-1", "strict")]


def outcome(cls: type[tarfile.TarInfo], buf: bytes, encoding: str, errors: str) -> tuple:
    try:
        info = cls.frombuf(buf, encoding, errors)
    except Exception as exc:  # noqa: BLE001 - the exception itself is what is compared
        return ("raised", type(exc), str(exc))
    return ("parsed", tuple((slot, getattr(info, slot, "<unset>")) for slot in SLOTS))


def assert_same(buf: bytes, codec: tuple[str, str]) -> None:
    assert outcome(FastTarInfo, buf, *codec) == outcome(tarfile.TarInfo, buf, *codec)


def fix_checksum(block: bytearray, signed: bool = False) -> None:
    block[148:156] = b" " * 8
    total = sum((b - 256 if b > 127 else b) for b in block) if signed else sum(block)
    block[148:156] = b"%06o\0 " % (total & 0o777777)


names = st.text(st.characters(blacklist_categories=("Cs",)), max_size=130)
numbers = st.one_of(st.integers(0, 0o7777777), st.integers(0, 1 << 70))
header = st.builds(
    dict, name=names, linkname=names, kind=st.sampled_from(TYPES), mode=st.integers(0, 0o7777777), uid=numbers,
    gid=numbers, size=numbers, mtime=st.one_of(numbers, st.integers(-(1 << 40), 0)), uname=names, gname=names,
    devmajor=numbers, devminor=numbers, fmt=st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT,
                                                             tarfile.PAX_FORMAT]))


def blocks_of(spec: dict) -> list[bytes]:
    info = tarfile.TarInfo(spec["name"])
    for key in ("linkname", "mode", "uid", "gid", "size", "mtime", "uname", "gname", "devmajor", "devminor"):
        setattr(info, key, spec[key])
    info.type = spec["kind"]
    try:
        raw = info.tobuf(spec["fmt"], "utf-8", "surrogateescape")
    except (ValueError, UnicodeError):
        return []
    return [raw[i:i + 512] for i in range(0, len(raw), 512)]


@settings(max_examples=400)
@given(spec=header, codec=st.sampled_from(CODECS))
def test_headers_tarfile_writes(spec: dict, codec: tuple[str, str]) -> None:
    for block in blocks_of(spec):
        assert_same(block, codec)


@settings(max_examples=600)
@given(spec=header, edits=st.lists(st.tuples(st.integers(0, 511), st.integers(0, 255)), min_size=1, max_size=6),
       refix=st.sampled_from(["no", "unsigned", "signed"]), codec=st.sampled_from(CODECS))
def test_mutated_headers(spec: dict, edits: list[tuple[int, int]], refix: str, codec: tuple[str, str]) -> None:
    for raw in blocks_of(spec)[:1]:
        block = bytearray(raw)
        for pos, value in edits:
            block[pos] = value
        if refix != "no":
            fix_checksum(block, signed=refix == "signed")
        assert_same(bytes(block), codec)


@settings(max_examples=300)
@given(data=st.binary(min_size=0, max_size=520), refix=st.booleans(), codec=st.sampled_from(CODECS))
def test_random_blocks(data: bytes, refix: bool, codec: tuple[str, str]) -> None:
    block = bytearray(data)
    if refix and len(block) == 512:
        fix_checksum(block)
    assert_same(bytes(block), codec)


SPECIAL_NAMES = ["dir/", "dir//", "a/b/", "x" * 90 + "/" + "y" * 90, "p" * 150 + "/q/", "ü" * 60 + "/f", "./", "/",
                 "", "plain"]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_every_type_with_special_names(fmt: int) -> None:
    """Each member type with trailing-slash names (V7 directories) and ustar prefixes (kept only for
    non-GNU types): rare for random draws, so tried exhaustively."""
    for kind in TYPES:
        for name in SPECIAL_NAMES:
            spec = {"name": name, "linkname": "t", "kind": kind, "mode": 0o755, "uid": 1, "gid": 2, "size": 0,
                    "mtime": 1, "uname": "u", "gname": "g", "devmajor": 0, "devminor": 0, "fmt": fmt}
            for block in blocks_of(spec):
                for codec in CODECS:
                    assert_same(block, codec)


@pytest.mark.parametrize("field", ["mode", "uid", "size", "mtime", "devmajor"])
@pytest.mark.parametrize("text", [b"\x1c644", b" 644 ", b"+644", b"6_44", b"0o644", b"", b"\xff\x00\x00\x01",
                                  b"\x80\x00\x00\x01", b"9", b"\xe9"])
def test_odd_numbers(field: str, text: bytes) -> None:
    """Whitespace, signs, underscores, base-256 and non-ASCII in number fields (str and bytes strip differ)."""
    offsets = {"mode": (100, 8), "uid": (108, 8), "size": (124, 12), "mtime": (136, 12), "devmajor": (329, 8)}
    start, width = offsets[field]
    block = bytearray(blocks_of({"name": "f", "linkname": "", "kind": tarfile.REGTYPE, "mode": 0o644, "uid": 0,
                                 "gid": 0, "size": 3, "mtime": 0, "uname": "", "gname": "", "devmajor": 0,
                                 "devminor": 0, "fmt": tarfile.USTAR_FORMAT})[0])
    block[start:start + width] = text.ljust(width, b"\0")[:width]
    fix_checksum(block)
    assert_same(bytes(block), CODECS[0])


def test_whole_archives_list_the_same_members() -> None:
    """pax records, GNU long names and links, ustar prefixes: the member list read through each class."""
    raw = io.BytesIO()
    for fmt in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        with tarfile.open(fileobj=raw, mode="w", format=fmt) as tf:
            for name in ("plain", "d" * 120 + "/long", "ü/ñ", "dir/", "x" * 90 + "/" + "y" * 90):
                info = tarfile.TarInfo(name)
                info.size = 3
                tf.addfile(info, io.BytesIO(b"abc"))
            link = tarfile.TarInfo("l")
            link.type, link.linkname = tarfile.SYMTYPE, "t" * 200
            tf.addfile(link)
        data = raw.getvalue()
        raw = io.BytesIO()

        def listing(cls: type[tarfile.TarInfo], data: bytes = data) -> list[tuple]:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:", tarinfo=cls) as tf:
                return [tuple(getattr(m, s, None) for s in SLOTS) for m in tf]

        assert listing(FastTarInfo) == listing(tarfile.TarInfo)
        assert len(listing(FastTarInfo)) == 6


def test_plain_headers_take_the_fast_path(monkeypatch) -> None:
    """The comparisons above only mean something if the fast path runs: stock frombuf is not called for them."""
    calls = []
    stock = tarfile.TarInfo.frombuf.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(tarfile.TarInfo, "frombuf",
                        classmethod(lambda cls, *a: calls.append(a) or stock(cls, *a)))
    info = tarfile.TarInfo("pkg/mod.py")
    info.size, info.mode, info.mtime = 10, 0o644, 1_700_000_000
    parsed = FastTarInfo.frombuf(info.tobuf(tarfile.USTAR_FORMAT), "utf-8", "surrogateescape")
    assert (parsed.name, parsed.size, parsed.mode, parsed.mtime) == ("pkg/mod.py", 10, 0o644, 1_700_000_000)
    assert calls == []
    with pytest.raises(tarfile.EOFHeaderError):
        FastTarInfo.frombuf(bytes(512), "utf-8", "surrogateescape")
    assert len(calls) == 1  # the end-of-archive block went to the stock parser
