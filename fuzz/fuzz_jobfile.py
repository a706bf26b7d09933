"""atheris harness: job files (YAML/JSON with lines, settings + steps), the DAG check and step conditions.

Run: .venv/bin/python fuzz/fuzz_jobfile.py -atheris_runs=1000

Properties: any input either yields a job whose validate() returns a topological order of all its steps
(every step after its dependencies) or raises JobDefinitionError / ConfigError - never another exception;
a parsed condition evaluates or raises ConditionError.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from runnerlib.config import ConfigError, Layer, mapping_layer
    from runnerlib.execution.conditions import ConditionError, parse_condition
    from runnerlib.jobs import Job, JobDefinitionError, parse_document, steps_from_data


def check_job(text: str, name: str) -> None:
    try:
        document = parse_document(text, name)
        data = document.data
        if not isinstance(data, dict):
            return
        data = dict(data)
        steps = data.pop("steps", None)
        layer: Layer = mapping_layer("file", data, lambda field: document.where((field,)))
        del layer
        if steps is None:
            return
        job = Job("fuzz")
        steps_from_data(job, steps, document)
        order = job.validate()
    except (JobDefinitionError, ConfigError):
        return
    position = {n: i for i, n in enumerate(order)}
    if sorted(order) != sorted(s.name for s in job.steps):
        raise AssertionError("validate() lost or invented steps")
    for step in job.steps:
        for dep in step.depends_on:
            if position[dep] >= position[step.name]:
                raise AssertionError(f"{step.name} ordered before its dependency {dep}")


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    choice = fdp.ConsumeIntInRange(0, 2)
    text = fdp.ConsumeUnicodeNoSurrogates(4096)
    if choice == 0:
        check_job(text, "job.yaml")
    elif choice == 1:
        check_job(text, "job.json")
    else:
        try:
            cond = parse_condition(text)
        except ConditionError:
            return
        try:
            # With the status functions it calls (success(), failure(), ...): evaluates, never raises else.
            cond.evaluate({n: "x" for n in cond.names()}, {f: fdp.ConsumeBool() for f in sorted(cond.functions)})
        except ConditionError:
            pass


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
