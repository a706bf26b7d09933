"""atheris harness: "did you mean" over the job-file and workflow schemas (runnerlib.suggest).

Run: .venv/bin/python fuzz/fuzz_suggest.py -atheris_runs=1000

Property: for any location (strings and integers, as pydantic reports them) and any misspelt key, the
message names the key and suggests only a key the schema allows at that place; it never raises.
"""

from __future__ import annotations

import re
import sys

import atheris

with atheris.instrument_imports():
    from runnerlib.jobs import StepSpec
    from runnerlib.suggest import known_keys, unknown_key_message
    from runnerlib.workflow.models import Workflow

SCHEMAS = [StepSpec.model_json_schema(), Workflow.model_json_schema()]


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    schema = SCHEMAS[fdp.ConsumeIntInRange(0, len(SCHEMAS) - 1)]
    loc: list[str | int] = []
    for _ in range(fdp.ConsumeIntInRange(1, 6)):
        loc.append(fdp.ConsumeIntInRange(0, 20) if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(12))
    message = unknown_key_message({"type": "extra_forbidden", "loc": tuple(loc)}, schema)
    assert message is not None and message.startswith("unknown key ")
    suggested = re.search(r"did you mean '(.*)'\?\)$", message)
    if suggested:
        assert suggested.group(1) in known_keys(schema, tuple(loc))


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
