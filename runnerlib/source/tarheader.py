"""A faster tar header parser for the common case, falling back to tarfile's own for everything else.

tarfile.TarInfo.frombuf spends ~20 us per member, half of it computing both the signed and unsigned
checksum through a 504-item tuple; for an archive of many small files that is a fifth of the extraction
time. FastTarInfo.frombuf parses a plain header (octal numbers, a type other than old GNU sparse, the
unsigned checksum matching) with one struct unpack and one sum, and hands every other header, including
every one it cannot parse, to the stock frombuf unchanged. The result is the same object or the same
exception as the stock parser for any 512 bytes (tests/source/test_source_tarheader.py compares them
on valid, mutated and random headers). Only the header block is parsed here: pax and GNU long-name
processing, offsets and sparse maps stay in tarfile.
"""

from __future__ import annotations

import struct
import tarfile
from typing import Self

# name mode uid gid size mtime chksum type linkname magic version uname gname devmajor devminor prefix
_HEADER = struct.Struct("100s8s8s8s12s12s8s1s100s6s2s32s32s8s8s155s")


def _octal(field: bytes) -> int:
    # tarfile.nti for an octal field, step for step; a ValueError sends the header to the stock parser.
    # A base-256 field starts with byte 0o200 or 0o377, which the ascii decode refuses: it falls back.
    return int(field.partition(b"\0")[0].decode("ascii").strip() or "0", 8)


class FastTarInfo(tarfile.TarInfo):
    """TarInfo whose header parsing takes a fast path for plain headers (pass as tarfile.open(tarinfo=))."""

    __slots__ = ()

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        """Same as tarfile.TarInfo.frombuf (same object, same exception), faster for plain headers."""
        if len(buf) != tarfile.BLOCKSIZE or buf[156:157] == tarfile.GNUTYPE_SPARSE:
            return super().frombuf(buf, encoding, errors)
        try:
            (name, mode, uid, gid, size, mtime, chksum, kind, linkname, _magic, _version, uname, gname,
             devmajor, devminor, prefix) = _HEADER.unpack_from(buf)
            # An all-NUL block sums to 0 and cannot match 256 + ...: it falls back and ends the archive.
            checksum = _octal(chksum)
            if checksum != 256 + sum(buf) - sum(chksum):
                return super().frombuf(buf, encoding, errors)  # bad, or a signed-char checksum
            obj = cls()
            obj.name = name.partition(b"\0")[0].decode(encoding, errors)
            obj.mode = _octal(mode)
            obj.uid = _octal(uid)
            obj.gid = _octal(gid)
            obj.size = _octal(size)
            obj.mtime = _octal(mtime)
            obj.chksum = checksum
            obj.type = kind
            obj.linkname = linkname.partition(b"\0")[0].decode(encoding, errors)
            obj.uname = uname.partition(b"\0")[0].decode(encoding, errors)
            obj.gname = gname.partition(b"\0")[0].decode(encoding, errors)
            obj.devmajor = _octal(devmajor)
            obj.devminor = _octal(devminor)
            full_prefix = prefix.partition(b"\0")[0].decode(encoding, errors)
        except ValueError:  # any field the stock parser may refuse (it raises its own error)
            return super().frombuf(buf, encoding, errors)
        if obj.type == tarfile.AREGTYPE and obj.name.endswith("/"):
            obj.type = tarfile.DIRTYPE  # old V7 directories
        if obj.isdir():
            obj.name = obj.name.rstrip("/")
        if full_prefix and obj.type not in tarfile.GNU_TYPES:
            obj.name = full_prefix + "/" + obj.name
        return obj
