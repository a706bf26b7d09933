"""runnerlib's own words: the lines it writes about a job are composed of its fixed vocabulary and user parts.

The one rule: values registered at run time (by `::add-mask::`, the socket, a source) mask USER text, never
runnerlib's own words. A step that prints `::add-mask::failed` (perhaps because a trusted step cat-ed an
artifact an untrusted step wrote) must not be able to turn `failed` into `***` in the status lines, the
summary table or summary.json: a report that can be rewritten by the code it reports on is worthless.

So every status line and the summary are built as an `Own` (a template of runnerlib's words plus named
parts) or as records whose fields are known; a renderer masks the parts and only the parts:

- user parts, masked with the job's whole registry: step and job names, commands, reasons (they may quote a
  process's message), plugin names, and any string field this module does not know;
- runnerlib's own, never masked: the template text, numbers (exit codes, durations, counts), booleans, and
  a string field's value only when it belongs to that field's fixed vocabulary (`status` is one of
  STATUSES, `trust` is trusted/untrusted).

What this leaks, and why that is acceptable: nothing about a secret. Runnerlib's words are printed whatever
the secrets are, so showing them tells nobody anything a secret holds. A secret that happens to equal a status
word (a password `failed`) is not hidden where runnerlib itself writes that word, and a secret that spans a
user part and runnerlib's words (`build  failed`) is no longer caught as a whole; its user part is the step's
name, which the console prefixes show anyway. The alternative (keep run-time registrations in a layer that
runnerlib's lines do not use) was rejected: a genuine secret registered in band and quoted by a reason or a
command line would then be printed in clear.

Anything that is not an `Own` (a plain str) is masked whole, as before: the safe default for code that does
not know this module.

>>> line = Own("finished ({status}) in {seconds:.2f}s", status="exit 1", seconds=0.5)
>>> line.render(lambda text: text.replace("exit 1", "***"))
'finished (***) in 0.50s'
>>> Own("step {name} {status}", name="deploy", status=Own("failed")).render(lambda text: "***")
'step *** failed'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

Mask = Callable[[str], str]

# The statuses a step result can have (execution.scheduler); "allowed_failure" is how tables colour one.
STATUSES = frozenset({"pending", "running", "success", "failed", "timed_out", "refused", "cancelled", "skipped",
                      "allowed_failure"})
# String fields of a record whose values runnerlib chooses from a fixed set: shown unmasked when in the set.
VOCABULARY: Mapping[str, frozenset[str]] = {"status": STATUSES, "trust": frozenset({"trusted", "untrusted"})}


class Own:
    """A line of runnerlib's: `template` (its words, a literal in runnerlib's code) and named `parts`.

    `render(mask)` masks each str part; numbers, booleans, None and nested `Own` parts are runnerlib's own.
    `str()` gives the unmasked text: whoever prints it without `render` must mask it whole.
    """

    __slots__ = ("template", "parts")

    def __init__(self, template: str, /, **parts: Any) -> None:
        self.template = template
        self.parts = parts

    def render(self, mask: Mask) -> str:
        """The line with every user part masked by `mask` and runnerlib's words untouched."""
        return self.template.format(**{name: own_part(value, mask) for name, value in self.parts.items()})

    def __str__(self) -> str:
        return self.template.format(**{name: str(v) if isinstance(v, Own) else v for name, v in self.parts.items()})

    def __repr__(self) -> str:  # never the parts: they may be secrets
        return f"<Own {self.template!r}>"


def own_part(value: Any, mask: Mask) -> Any:
    """One part: an Own rendered, a number/bool/None as is, anything else masked as text."""
    if isinstance(value, Own):
        return value.render(mask)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return mask(str(value))


def render(message: Own | str, mask: Mask) -> str:
    """`message` as it may be written: an Own with its parts masked, any other text masked whole."""
    return message.render(mask) if isinstance(message, Own) else mask(str(message))


def own_record(record: Mapping[str, Any], mask: Mask) -> dict[str, Any]:
    """A record (a step result's dict) with its user fields masked and runnerlib's own fields untouched."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, str) and value in VOCABULARY.get(key, ()):
            out[key] = value
        elif isinstance(value, Mapping):
            out[key] = own_record(value, mask)
        elif isinstance(value, (list, tuple)):
            out[key] = [own_record(v, mask) if isinstance(v, Mapping) else own_part(v, mask) for v in value]
        else:
            out[key] = own_part(value, mask)
    return out


def summary_document(*, job: str, job_id: str | None, exit_code: int | None, steps: Iterable[Any],
                     plugins: Iterable[tuple[str, float, int]], mask: Mask) -> dict[str, Any]:
    """summary.json (and the JSON log's summary record): step results and plugin timings, user fields masked.

    Serialise it as it is: masking the serialised text again would let run-time registrations reach
    runnerlib's own words."""
    return {"job": mask(job), "job_id": None if job_id is None else mask(job_id), "exit_code": exit_code,
            "steps": [own_record(step.as_dict(), mask) for step in steps],
            "plugins": [{"plugin": mask(name), "seconds": seconds, "calls": calls} for name, seconds, calls in plugins]}
