"""atheris harness: the known-credential-formats stage, fed random bytes in random pieces.

Run: .venv/bin/python fuzz/fuzz_known_formats.py -atheris_runs=1000

Properties: whatever the split (and with an idle flush after some writes), the stage never raises; the bytes it
emits equal `mask_known_formats(whole input)` when no idle flush came; the hold-back never exceeds the largest
window; the Hyperscan prefilter's viable hits resolve like every literal occurrence; and a token planted whole
(a GitHub token, behind a separator, its base64, folded at 8 to 40 columns, and the base64 of it in UTF-16LE at
each alignment) never survives. Through a registry's stream (MaskedThenKnown), the masker's one pass (its
database finds the known-format prefixes too) emits the same bytes and notices as the known-formats stage
scanning every write itself.
"""

from __future__ import annotations

import base64
import sys

import atheris

with atheris.instrument_imports():
    from runnerlib.security import known_formats as kf
    from runnerlib.security.registry import SecretRegistry
    from runnerlib.testing import known_stage_through

# Seeds so the fuzzer does not have to find whole prefixes by itself: a byte value stands for a prefix.
SEEDS = {ord("@"): b"ghp_", ord("$"): b"Authorization: Bearer ", ord("%"): b"-----BEGIN RSA PRIVATE KEY-----\n",
         ord("^"): b"-----END RSA PRIVATE KEY-----", ord("~"): b"?X-Amz-Signature=", ord("`"): b"AKIA",
         ord("|"): b"xoxb-", ord("&"): b"&sig=", ord("#"): b"Z2hwX", ord("!"): b"LS0tLS1CRUdJTi"}
TOKEN = b"ghp_" + b"Zz9" * 12
WIDE = TOKEN.decode().encode("utf-16-le")  # PowerShell's -EncodedCommand holds UTF-16LE
MAX_HOLD = max(f.window for f in (*kf.FORMATS, *kf.BASE64_FORMATS)) + 2 * kf.MAX_PREFIX
REGISTRY = SecretRegistry()
REGISTRY.add_many(["pw-ghp_QQQQQQQQ", "AKIAsecretvalue1"], source="fuzz")


def folded(line: bytes, width: int) -> bytes:
    """`line` as `fold -w width` prints it (the planted token's prefix, at column 3, stays whole from 8 on)."""
    return b"\n".join(line[i:i + width] for i in range(0, len(line), width))


def through_registry(pieces: list[bytes], idle: bool, one_pass: bool) -> tuple[bytes, list[str]]:
    return known_stage_through(REGISTRY, pieces, one_pass=one_pass, idle=idle)


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    cuts = sorted(fdp.ConsumeIntListInRange(fdp.ConsumeIntInRange(0, 16), 0, 600))
    idle = fdp.ConsumeBool()
    plant = fdp.ConsumeBool()
    raw = fdp.ConsumeBytes(fdp.remaining_bytes())
    body = b"".join(SEEDS.get(b, bytes([b])) for b in raw)
    width = fdp.ConsumeIntInRange(8, 40) if plant else 0
    if plant:
        body = body + b"\n" + TOKEN + b"\n" + base64.b64encode(TOKEN) + b"\n" + folded(b"t: " + TOKEN, width) + b"\n" + \
            b"pwsh -EncodedCommand " + base64.b64encode(b" " * (width % 3) + WIDE) + b"\n"
    out: list[bytes] = []
    stage = kf.KnownFormatsFilter(out.append)
    start = 0
    pieces = []
    for cut in [c for c in cuts if 0 < c < len(body)] + [len(body)]:
        if cut >= start:
            pieces.append(body[start:cut])
            stage.write(body[start:cut])
            start = cut
            if idle:
                stage.flush_idle()
            if len(stage._pending) > MAX_HOLD:
                raise AssertionError(f"held {len(stage._pending)} bytes, more than {MAX_HOLD}")
    stage.close()
    got = b"".join(out)
    if not idle and got != kf.mask_known_formats(body)[0]:
        raise AssertionError(f"stream {got!r} != whole {kf.mask_known_formats(body)[0]!r} for {body!r} at {cuts}")
    finder = kf._get_finder()
    for final in (False, True) if finder.engine == "hyperscan" else ():  # the viable prefilter resolves like every literal occurrence
        if kf._resolve(body, 0, final, hits=finder.find_viable(body)) != kf._resolve(body, 0, final,
                                                                           hits=finder.find_literal(body)):
            raise AssertionError(f"viable prefilter differs from every occurrence for {body!r}")
    if through_registry(pieces, idle, True) != through_registry(pieces, idle, False):
        raise AssertionError(f"one pass differs from two for {body!r} at {cuts}")
    if plant and TOKEN[4:20] in got:
        raise AssertionError(f"planted token survived in {got!r}")
    if plant and TOKEN[4:20] in got.replace(b"\n", b""):
        raise AssertionError(f"planted token folded at {width} survived in {got!r}")
    if plant and base64.b64encode(TOKEN)[8:24] in got:
        raise AssertionError(f"planted token's base64 survived in {got!r}")
    wide = base64.b64encode(b" " * (width % 3) + WIDE)  # the token at each alignment of the encoding
    if plant and wide[(width % 3 + 8) * 4 // 3 + 1:][:16] in got:
        raise AssertionError(f"planted token's base64 of UTF-16 survived in {got!r}")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
