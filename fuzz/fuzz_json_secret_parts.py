"""atheris harness: security/json_secret_parts.py on arbitrary bytes.

Run: .venv/bin/python fuzz/fuzz_json_secret_parts.py -atheris_runs=100000

Property: never raises; every part is a string leaf of the parsed object (so it is text the value holds).
"""

from __future__ import annotations

import json
import sys

import atheris

with atheris.instrument_imports():
    from runnerlib.security.json_secret_parts import secret_parts


def TestOneInput(data: bytes) -> None:
    parts = secret_parts(data)
    if parts:
        text = json.dumps(json.loads(data.strip()), ensure_ascii=False).encode("utf-8", "surrogateescape")
        for part in parts:
            if json.dumps(part.decode("utf-8", "surrogateescape"), ensure_ascii=False).encode(
                    "utf-8", "surrogateescape")[1:-1] not in text:
                raise AssertionError(f"{part!r} is no leaf of {data!r}")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
