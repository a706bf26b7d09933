"""atheris harness: the ::add-mask:: stage, fed random bytes in random pieces.

Run: .venv/bin/python fuzz/fuzz_add_mask.py -atheris_runs=1000

Property: whatever the split, the output and the registered values equal a whole-input, line-by-line
reading of the same bytes (commands swallowed and registered, at a line start with their line and within a
line with the rest of it, every other byte passed on in order).
"""

from __future__ import annotations

import logging
import sys

import atheris

with atheris.instrument_imports():
    from runnerlib.security.inband import AddMaskFilter
    from runnerlib.testing import add_mask_reference

logging.disable(logging.WARNING)  # empty and over-long commands warn; thousands of times here


class Recorder:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    def add(self, value: bytes, *, source: str) -> bool:
        self.values.append(bytes(value))
        return True


reference = add_mask_reference


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    cuts = sorted(fdp.ConsumeIntListInRange(fdp.ConsumeIntInRange(0, 16), 0, 512))
    # Seed the input with the command so the fuzzer does not have to find all 12 bytes by itself.
    body = fdp.ConsumeBytes(fdp.remaining_bytes()).replace(b"@", b"::add-mask::")
    recorder = Recorder()
    out: list[bytes] = []
    stage = AddMaskFilter(recorder, out.append, trusted=True)
    start = 0
    for cut in [c for c in cuts if 0 < c < len(body)] + [len(body)]:
        if cut >= start:
            stage.write(body[start:cut])
            start = cut
    stage.close()
    got = (b"".join(out), recorder.values)
    if got != reference(body):
        raise AssertionError(f"stream {got!r} != reference {reference(body)!r} for {body!r} cut at {cuts}")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
