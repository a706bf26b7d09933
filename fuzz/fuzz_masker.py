"""atheris harness: the streaming masker against the brute-force reference.

Run: .venv/bin/python fuzz/fuzz_masker.py -atheris_runs=1000

Properties, for fuzzer-chosen secrets (small alphabet half the time, so they overlap), text and write
splits: MaskedStream output == SecretRegistry.mask(whole text) on every engine, and == reference_mask(whole
text) unless a wrapped-form trigger occurs in it (the wrapped view then masks more); no planted secret survives
whole. Half the time the text is the secrets' base64 or hex dump, wrapped at a fuzzer-chosen width, or the
`od -c` dump of the text and a secret (a fuzzer-chosen number of bytes a line, with or without offsets), or a
line holding a secret with a colour code inserted at a fuzzer-chosen byte, or the beginning of a longer secret
followed by `...` (truncated.py: no piece of HEAD bytes or more survives), or a multi-word secret folded at a
space with indentation (folded.py), or a secret after other text with its line cut every `width` bytes
(folded.BreakSet), or the text and a secret as `od -x`, `od -b` or a numeric `od` (`-tu1`, `-d`, `-s`, `-o`,
`-tx4`) dumps them (read from the dump's first line), or a secret spaced out or reversed after other text.
"""

from __future__ import annotations

import base64
import logging
import re
import sys

import atheris

with atheris.instrument_imports():
    from runnerlib.security import folded, truncated, wrapped
    from runnerlib.security.masker import reference_mask
    from runnerlib.security.matcher import available_engines
    from runnerlib.security.registry import SecretRegistry

ENGINES = available_engines()
logging.getLogger("runnerlib.secrets").setLevel(logging.ERROR)  # refusals of short fuzz values are expected


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    small = fdp.ConsumeBool()

    def some_bytes(n: int) -> bytes:
        raw = fdp.ConsumeBytes(n)
        return bytes(b"ab1\n"[x % 4] for x in raw) if small else raw

    secrets = [some_bytes(fdp.ConsumeIntInRange(4, 12)) for _ in range(fdp.ConsumeIntInRange(1, 4))]
    text = some_bytes(fdp.ConsumeIntInRange(0, 400))
    cuts = sorted(fdp.ConsumeIntInRange(0, len(text)) for _ in range(fdp.ConsumeIntInRange(0, 12)))
    chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    engine = ENGINES[fdp.ConsumeIntInRange(0, len(ENGINES) - 1)]

    cut_piece = folded_secret = b""
    if fdp.ConsumeBool():  # an encoded document of the text and a secret, wrapped (security/wrapped.py)
        body = text[: len(text) // 2] + secrets[0] + text[len(text) // 2:]
        how = fdp.ConsumeIntInRange(0, 9)
        width = fdp.ConsumeIntInRange(16, 100)
        if how == 9:  # a numeric dump (`od -tu1`, `od -d`, `od -s`, `od -o`, `od -tx4`: wrapped._numeric_line)
            text = numeric_dump(body, NUMERIC[fdp.ConsumeIntInRange(0, len(NUMERIC) - 1)])
        elif how == 8:  # the secret spaced out, one byte a line, reversed or in upper case after other text
            chars = [secrets[0][i:i + 1] for i in range(len(secrets[0]))]  # (security/rearranged_forms.py)
            shown = [b" ".join(chars), b"\n" + b"\n".join(chars) + b"\n", secrets[0][::-1],
                     secrets[0].upper()][fdp.ConsumeIntInRange(0, 3)]
            text = text[: len(text) // 2] + shown + text[len(text) // 2:]
        elif how == 7:  # `hexdump` / `od -x` words or `od -b` octal, read from the first line (wrapped.DUMP_START)
            text = words_or_octal_dump(body, 2 * (width // 8) or 2, fdp.ConsumeBool())
        elif how == 6:  # a secret after other text, its line cut every `width` bytes (fold -w: folded.BreakSet)
            line = text[: len(text) // 2].replace(b"\n", b" ") + secrets[0]
            text = b"\n".join(line[i:i + width] for i in range(0, len(line), width)) + b"\n" + text[len(text) // 2:]
        elif how == 5:  # a multi-word secret folded at a space, as yaml.dump prints it (security/folded.py)
            words = [w for w in secrets[0].replace(b"\n", b" ").split(b" ") if w] or [b"w"]
            secrets[0] = b" ".join(words * (1 + folded.MIN_LENGTH // (len(b" ".join(words)) + 1)))
            spaces = [i for i, c in enumerate(secrets[0]) if c == 0x20]
            at = spaces[fdp.ConsumeIntInRange(0, len(spaces) - 1)] if spaces else 0
            indent = b" " * fdp.ConsumeIntInRange(1, 8)
            # yaml's quoted styles: `'correct` before a fold is no word; in double quotes the fold is `\` line break
            # indentation `\ ` (its escaped space).
            quote = (b"", b"'", b'"')[fdp.ConsumeIntInRange(0, 2)]
            fold = b"\\\n" + indent + b"\\ " if quote == b'"' else b"\n" + indent
            shown = secrets[0][:at] + fold + secrets[0][at + 1:] if spaces else secrets[0]
            text = text[: len(text) // 2] + b"\nk: " + quote + shown + quote + b"\n" + text[len(text) // 2:]
            folded_secret = secrets[0] if spaces and folded.foldable(secrets[0]) else b""
        elif how == 4:  # the beginning of a longer secret cut short by a tool, then `...` (security/truncated.py)
            secrets[0] += some_bytes(fdp.ConsumeIntInRange(1, 30))
            cut = fdp.ConsumeIntInRange(min(truncated.HEAD, len(secrets[0])), len(secrets[0]))
            marker = truncated.MARKERS[fdp.ConsumeIntInRange(0, len(truncated.MARKERS) - 1)]
            text = text[: len(text) // 2] + secrets[0][:cut] + marker + text[len(text) // 2:]
            if truncated.HEAD <= cut < len(secrets[0]) and b"\n" not in secrets[0][:cut]:
                cut_piece = secrets[0][:cut] + marker  # the piece where it is cut: the same bytes may be text elsewhere
        elif how == 3:
            cut = fdp.ConsumeIntInRange(0, len(secrets[0]))
            code = (b"\x1b[31m", b"\x1b[m\x1b[K", b"\x1b[01;31m\x1b[K")[fdp.ConsumeIntInRange(0, 2)]
            text = text[: len(text) // 2] + secrets[0][:cut] + code + secrets[0][cut:] + text[len(text) // 2:]
        elif how == 2:
            text = od_c_dump(body, width // 4, fdp.ConsumeBool())
        else:
            body = base64.b64encode(body) if how else body.hex().encode()
            text = b"".join(body[i:i + width] + b"\n" for i in range(0, len(body), width))
        cuts = sorted(fdp.ConsumeIntInRange(0, len(text)) for _ in range(fdp.ConsumeIntInRange(0, 12)))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]

    registry = SecretRegistry(engine=engine, background_merge=False)
    registry.add_many(secrets, source="fuzz")
    expected = registry.mask(text)
    # A dump's first line at the start is read as a trigger hit would be (wrapped.DUMP_START, without its line break),
    # and a secret found whole has its line and the lines around it read too (the ASCII column of a dump, a run of
    # encoding lines joined: `aaaa` in `aaaaaaaa\naaaa` masks the break with it; a line read without its colour codes
    # or with its percent escapes in uppercase).
    viewed = (any(t in text for t in registry.triggers()) or wrapped.starts_a_dump(text)
              or any(c in text for c in (b"\n", b"\x1b", b"%")) and any(p in text for p in registry.patterns()))
    if not viewed and expected != reference_mask(text, registry.patterns(), line_starts=registry.line_starts()):
        raise AssertionError(f"mask != reference without any trigger on {engine}")
    out: list[bytes] = []
    with registry.stream(out.append) as stream:
        for chunk in chunks:
            stream.write(chunk)
    got = b"".join(out)
    if got != expected:
        raise AssertionError(f"stream != whole on {engine}: {got!r} != {expected!r}")
    for s in registry.secrets():
        # A secret holding the replacement's `*` can be spelled by a replacement and the text after it (`*~~~~`
        # masked in `**~~~~~~` leaves `****~~~~~~`): only the others are looked for.
        if s in got and b"*" not in s:
            raise AssertionError("a whole secret survived")
    if folded_secret in registry.secrets() and folded_secret in re.sub(rb"\\\n[ \t]*\\ |[ \t]*\n[ \t]*", b" ", got):
        raise AssertionError("a multi-word secret folded at a space survived")
    if cut_piece and not small and b"*" not in cut_piece and cut_piece in got:  # (the piece, then its marker)
        raise AssertionError("the beginning of a secret cut short by `...` survived")


def od_c_dump(data: bytes, per_line: int, offsets: bool) -> bytes:
    """What `od -c -w<per_line>` (`-An` without offsets) prints, for any bytes (od's `*` for repeated lines
    aside)."""
    lines = []
    for i in range(0, len(data), per_line):
        chunk = data[i:i + per_line]
        field = wrapped.od_c_form(chunk)
        lines.append((b"%07o" % i if offsets else b"") + b" " * (4 * len(chunk) - len(field)) + field + b"\n")
    return b"".join(lines)


def words_or_octal_dump(data: bytes, per_line: int, words: bool) -> bytes:
    """What `od -x -w<per_line>` (little-endian 16-bit words, an odd last byte padded with a zero) or `od -b
    -w<per_line>` prints, with offsets (od's `*` for repeated lines aside)."""
    lines = []
    for i in range(0, len(data), per_line):
        chunk = data[i:i + per_line]
        if words:
            padded = chunk + b"\0" * (len(chunk) % 2)
            fields = b" ".join(b"%02x%02x" % (padded[j + 1], padded[j]) for j in range(0, len(padded), 2))
        else:
            fields = b" ".join(b"%03o" % c for c in chunk)
        lines.append(b"%07o " % i + fields + b"\n")
    return b"".join(lines)


# (radix, word size, field width) as od prints them: -tu1, -d, -s, -o, -tx4.
NUMERIC = [(10, 1, 4), (10, 2, 6), (-10, 2, 7), (8, 2, 7), (16, 4, 9)]


def numeric_dump(data: bytes, spec: tuple[int, int, int]) -> bytes:
    """What `od` prints for `spec` (a negative radix: signed decimal), 16 bytes a line, with offsets; a short last
    word padded with zeros, as od does."""
    radix, size, width = spec
    lines = []
    for i in range(0, len(data), 16):
        chunk = data[i:i + 16]
        chunk += b"\0" * (-len(chunk) % size)
        fields = b""
        for j in range(0, len(chunk), size):
            value = int.from_bytes(chunk[j:j + size], "little", signed=radix < 0)
            # Octal and hex zero-padded to the field (less its space), decimal right-aligned.
            shown = b"%d" % value if abs(radix) == 10 else (b"%o" if radix == 8 else b"%x") % value
            fields += (shown if abs(radix) == 10 else shown.rjust(width - 1, b"0")).rjust(width)
        lines.append(b"%07o" % i + fields + b"\n")
    return b"".join(lines)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
