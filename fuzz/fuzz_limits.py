"""atheris harness: the resource-limit parsers (sizes, `--limit NAME=VALUE`, job-file `limits:` mappings).

Run: .venv/bin/python fuzz/fuzz_limits.py -atheris_runs=1000

Properties: parse_size either returns a positive integer below 4 EiB or raises LimitError whose message names
the field; parse_limit_options / coerce_limits either give StepLimits whose values are all positive
integers (cpus: a float of at least MIN_CPUS) or raise LimitError (a ValueError) with one line; describe() and format_size never fail.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from runnerlib.security.limits import (
        LIMIT_NAMES,
        MIN_CPUS,
        LimitError,
        StepLimits,
        coerce_limits,
        format_size,
        parse_limit_options,
        parse_size,
    )

UNITS = ["", "k", "K", "m", "M", "g", "G", "t", "KiB", "MiB", "GiB", "GB", "b", "iB", "x", " "]


def _size_text(fdp: atheris.FuzzedDataProvider) -> str:
    if fdp.ConsumeBool():
        return fdp.ConsumeUnicodeNoSurrogates(12)
    number = str(fdp.ConsumeIntInRange(0, 1 << 64))
    if fdp.ConsumeBool():
        number += "." + str(fdp.ConsumeIntInRange(0, 999))
    return number + fdp.PickValueInList(UNITS)


def test_one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    text = _size_text(fdp)
    try:
        size = parse_size(text, "memory")
        assert isinstance(size, int) and 1 <= size < 1 << 62, (text, size)
        format_size(size)
    except LimitError as exc:
        assert str(exc).startswith("memory: ") and "\n" not in str(exc), exc
    items = [f"{fdp.PickValueInList(list(LIMIT_NAMES) + ['swap', ''])}{fdp.PickValueInList(['=', ':', ''])}"
             f"{_size_text(fdp)}" for _ in range(fdp.ConsumeIntInRange(0, 4))]
    for parse in (parse_limit_options, coerce_limits, lambda v: coerce_limits(",".join(v))):
        try:
            limits = parse(items)
        except LimitError as exc:
            assert "\n" not in str(exc), exc
            continue
        assert isinstance(limits, StepLimits)
        for name, value in limits.items():
            if name == "cpus":
                assert isinstance(value, float) and MIN_CPUS <= value <= 1 << 20, value
            else:
                assert isinstance(value, int) and value > 0
        limits.describe()


def main() -> None:
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
