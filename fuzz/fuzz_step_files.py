"""atheris harness: the step files' parsers (output/env files, path file) and the workflow-command stage.

Run: .venv/bin/python fuzz/fuzz_step_files.py -atheris_runs=1000

Properties: a step file either parses into valid names and NUL-free values or is refused with StepFileError
(never another exception); a file built from what was parsed parses back to the same values; the
workflow-command stage gives the same bytes and annotations whatever the pieces its input arrives in.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from runnerlib.execution.step_files import ENV_NAME_RE, StepFileError, parse_assignments, parse_paths
    from runnerlib.execution.workflow_commands import WorkflowCommands


class _Sink:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


def _commands(pieces: list[bytes]) -> tuple[bytes, list]:
    commands = WorkflowCommands(lambda text: text, debug=True)
    sink = _Sink()
    stage = commands.filter(sink)
    for piece in pieces:
        stage.write(piece)
    stage.close()
    return sink.data, commands.annotations


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    cuts = sorted(fdp.ConsumeIntListInRange(fdp.ConsumeIntInRange(0, 8), 0, 256))
    # Seed the input with the syntax so the fuzzer need not find it by itself.
    body = fdp.ConsumeBytes(fdp.remaining_bytes()).replace(b"@", b"<<EOF\n").replace(b"#", b"\n::")
    for names in (None, ENV_NAME_RE):
        try:
            values = parse_assignments(body, label="f") if names is None else \
                parse_assignments(body, label="f", names=names)
        except StepFileError:
            continue
        rebuilt = "".join(f"{k}<<D_{len(v)}_x\n{v}\nD_{len(v)}_x\n" if "\n" in v or "\r" in v or "<<" in k + v
                          else f"{k}={v}\n" for k, v in values.items())
        if all(f"D_{len(v)}_x" not in v.split("\n") for v in values.values()) and not any(
                v.endswith("\r") or "\r\n" in v for v in values.values()):
            again = parse_assignments(rebuilt.encode(), label="f")
            if again != values:
                raise AssertionError(f"{values!r} -> {rebuilt!r} -> {again!r}")
    try:
        parse_paths(body, label="p")
    except StepFileError:
        pass
    points = [c for c in cuts if c <= len(body)]
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=False)]
    if _commands(pieces) != _commands([body]):
        raise AssertionError(f"workflow commands depend on the cuts {points} of {body!r}")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
