"""Step conditions: when a step runs, parsed safely (a tiny recursive-descent parser, never eval).

A condition is one of the status keywords or an expression on the job's variables:

- ``on_success`` (default; alias ``success``): every dependency succeeded (or failed with allow_failure);
- ``on_failure`` (alias ``failure``): some upstream step failed;
- ``always``: once the dependencies have finished, whatever their outcome;
- an expression, which also requires ``on_success``: ``branch == 'main'``,
  ``event_type in ['push', 'tag_created'] and not pr_number``, ``branch matches 'release/*'``;
- GitHub's status functions, in an expression or alone: ``success()``, ``failure()``, ``always()``,
  ``cancelled()``. As on GitHub, an expression without one implies ``success() && ...``; with one, the
  expression alone decides: ``failure() && branch == 'main'``, ``always() && pr_number``, ``!cancelled()``.
  ``success()``: every dependency succeeded (as ``on_success``); ``failure()``: some upstream step failed
  (as ``on_failure``); ``always()``: true. runnerlib starts no step once the job is cancelled (SIGTERM's
  grace is for stopping: what must run after a cancellation belongs in a CLEANUP plugin), so ``cancelled()``
  is false wherever a condition is evaluated: ``!cancelled()`` runs whatever happened upstream, and a
  condition that is ``cancelled()`` alone is refused. Other functions are refused with a "did you mean".

Expression grammar (keywords are also accepted as ``&&``, ``||``, ``!``, ``=~``)::

    expr  := and ('or' and)*
    and   := not ('and' not)*
    not   := 'not' not | cmp
    cmp   := value (('==' | '!=' | 'in' | 'not in' | 'matches') value)?
    value := STRING | NUMBER | true | false | null | NAME | FUNCTION '(' ')' | '(' expr ')'
           | '[' [value (',' value)*] ']'

A NAME may also be a step's output, ``steps.build.outputs.version`` (empty when the step set none), and the
whole condition may be wrapped in GitHub's ``${{ ... }}``.

Hand-written because the grammar is tiny and must not reach Python's evaluator: no attribute access, no
calls but the four status functions (no arguments), bounded length and nesting, and every name checked against the job's variables before any step runs.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_CONDITION_LENGTH = 2000
MAX_DEPTH = 32

STATUS_KEYWORDS = {"on_success": "on_success", "success": "on_success", "on_failure": "on_failure",
                   "failure": "on_failure", "always": "always",
                   # GitHub's status functions, alone: the same as the keywords.
                   "success()": "on_success", "failure()": "on_failure", "always()": "always"}
# GitHub's status functions (no arguments); their values come from the step's upstream results.
STATUS_FUNCTIONS = ("success", "failure", "always", "cancelled")


class ConditionError(ValueError):
    """A condition that cannot be parsed; the message names the position and what was expected."""


_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<op>==|!=|=~|&&|\|\||!|\(|\)|\[|\]|,)
  | (?P<ref>steps\.[A-Za-z0-9][A-Za-z0-9_-]*\.outputs\.[A-Za-z_][A-Za-z0-9_-]*)
  | (?P<call>[A-Za-z_][A-Za-z0-9_]*)(?=\s*\()
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
""", re.VERBOSE)
_EMPTY_ARGS_RE = re.compile(r"\s*\(\s*\)")
_LITERALS = ("true", "false", "null", "True", "False", "None")

_WORD_OPS = {"and": "and", "or": "or", "not": "not", "in": "in", "matches": "matches"}
_SYMBOL_OPS = {"&&": "and", "||": "or", "!": "not", "=~": "matches"}


@dataclass(frozen=True)
class _Tok:
    kind: str  # str, num, op, name, end
    value: Any
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m:
            raise ConditionError(f"unexpected character {text[pos]!r} at position {pos + 1}")
        kind = m.lastgroup or ""
        raw = m.group()
        if kind == "str":
            tokens.append(_Tok("str", re.sub(r"\\(.)", r"\1", raw[1:-1]), pos))
        elif kind == "num":
            tokens.append(_Tok("num", float(raw) if "." in raw else int(raw), pos))
        elif kind == "op":
            tokens.append(_Tok("op", _SYMBOL_OPS.get(raw, raw), pos))
        elif kind == "ref":  # a step's output (execution/step_refs.py): a variable like any other
            tokens.append(_Tok("name", raw, pos))
        elif kind == "call" and raw not in _WORD_OPS and raw not in _LITERALS:  # `not (a)` is no call
            args = _EMPTY_ARGS_RE.match(text, m.end())
            if raw not in STATUS_FUNCTIONS:
                from runnerlib.suggest import did_you_mean  # only for this error: start-up pays nothing

                hint = did_you_mean(f"{raw}()", [f"{f}()" for f in STATUS_FUNCTIONS])
                raise ConditionError(f"unknown function {raw}() at position {pos + 1}{hint}; conditions know "
                                     "success(), failure(), always() and cancelled()")
            if args is None:
                raise ConditionError(f"{raw}() at position {pos + 1} takes no arguments")
            tokens.append(_Tok("fn", raw, pos))
            pos = args.end()
            continue
        elif kind in ("name", "call"):
            if raw in _WORD_OPS:
                tokens.append(_Tok("op", _WORD_OPS[raw], pos))
            elif raw in _LITERALS:
                tokens.append(_Tok("lit", {"true": True, "True": True, "false": False, "False": False}.get(raw),
                                   pos))
            else:
                tokens.append(_Tok("name", raw, pos))
        pos = m.end()
    tokens.append(_Tok("end", None, len(text)))
    return tokens


# AST nodes are tuples: ("lit", v) ("var", name) ("fn", status function) ("list", [nodes]) ("not", n)
# ("and"|"or", a, b) ("cmp", op, a, b).
Node = tuple[Any, ...]


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0
        self.functions: set[str] = set()  # the status functions the condition calls

    def peek(self) -> _Tok:
        return self.tokens[self.i]

    def take(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect_op(self, value: str) -> None:
        tok = self.take()
        if tok.kind != "op" or tok.value != value:
            raise ConditionError(f"expected {value!r} at position {tok.pos + 1}")

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ConditionError(f"nested more than {MAX_DEPTH} levels")

    def parse(self) -> Node:
        node = self.expr()
        tok = self.peek()
        if tok.kind != "end":
            raise ConditionError(f"unexpected {_show(tok)} at position {tok.pos + 1}")
        return node

    def expr(self) -> Node:
        self.nest()
        node = self.and_()
        while self.peek().kind == "op" and self.peek().value == "or":
            self.take()
            node = ("or", node, self.and_())
        self.depth -= 1
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.peek().kind == "op" and self.peek().value == "and":
            self.take()
            node = ("and", node, self.not_())
        return node

    def not_(self) -> Node:
        tok = self.peek()
        if tok.kind == "op" and tok.value == "not":
            self.take()
            self.nest()
            node = ("not", self.not_())
            self.depth -= 1
            return node
        return self.cmp()

    def cmp(self) -> Node:
        left = self.value()
        tok = self.peek()
        if tok.kind == "op" and tok.value in ("==", "!=", "in", "matches"):
            self.take()
            return ("cmp", tok.value, left, self.value())
        if tok.kind == "op" and tok.value == "not" and self.tokens[self.i + 1].kind == "op" \
                and self.tokens[self.i + 1].value == "in":
            self.take()
            self.take()
            return ("not", ("cmp", "in", left, self.value()))
        return left

    def value(self) -> Node:
        tok = self.take()
        if tok.kind in ("str", "num", "lit"):
            return ("lit", tok.value)
        if tok.kind == "name":
            return ("var", tok.value)
        if tok.kind == "fn":
            self.functions.add(tok.value)
            return ("fn", tok.value)
        if tok.kind == "op" and tok.value == "(":
            node = self.expr()
            self.expect_op(")")
            return node
        if tok.kind == "op" and tok.value == "[":
            items: list[Node] = []
            if not (self.peek().kind == "op" and self.peek().value == "]"):
                items.append(self.value())
                while self.peek().kind == "op" and self.peek().value == ",":
                    self.take()
                    items.append(self.value())
            self.expect_op("]")
            return ("list", items)
        raise ConditionError(f"expected a value at position {tok.pos + 1}, got {_show(tok)}")


def _show(tok: _Tok) -> str:
    return "end of condition" if tok.kind == "end" else repr(tok.value)


@dataclass(frozen=True)
class Condition:
    """A parsed condition: `status` is on_success/on_failure/always, or "expression" when the expression calls
    status functions (`functions`) and so decides alone; `expression` is None or an AST."""

    text: str
    status: str
    expression: Node | None = None
    functions: frozenset[str] = frozenset()

    @property
    def waits_for_earlier_steps(self) -> bool:
        """Whether, without depends_on, the step waits for every step declared before it (a final step of a
        sequential pipeline): `always`, `on_failure`, and expressions that can hold after a failure."""
        return self.status in ("always", "on_failure") or bool(self.functions - {"success"})

    def names(self) -> set[str]:
        """The variable names the expression uses."""
        out: set[str] = set()

        def walk(node: Node) -> None:
            if node[0] == "var":
                out.add(node[1])
            elif node[0] == "list":
                for item in node[1]:
                    walk(item)
            elif node[0] in ("not",):
                walk(node[1])
            elif node[0] in ("and", "or"):
                walk(node[1])
                walk(node[2])
            elif node[0] == "cmp":
                walk(node[2])
                walk(node[3])

        if self.expression is not None:
            walk(self.expression)
        return out

    def evaluate(self, variables: Mapping[str, Any], status: Mapping[str, bool] | None = None) -> bool:
        """The expression's truth value (True for a status keyword). Unknown names raise ConditionError, and so
        does a status function when `status` (success/failure/always/cancelled -> bool) is not given."""
        if self.expression is None:
            return True
        return _truthy(_eval(self.expression, variables, status))


def parse_condition(text: str) -> Condition:
    """Parse a step condition (see the module docstring). Raises ConditionError with the position."""
    if not isinstance(text, str):
        raise ConditionError("a condition must be a string")
    stripped = text.strip()
    if not stripped:
        raise ConditionError("a condition must not be empty")
    if len(stripped) > MAX_CONDITION_LENGTH:
        raise ConditionError(f"a condition is limited to {MAX_CONDITION_LENGTH} characters")
    if stripped.startswith("${{") and stripped.endswith("}}"):
        stripped = stripped[3:-2].strip()  # GitHub's `if: ${{ ... }}` wrapper
        if not stripped:
            raise ConditionError("a condition must not be empty")
    keyword = re.sub(r"\s+", "", stripped) if stripped.endswith(")") else stripped
    if keyword in STATUS_KEYWORDS:
        return Condition(text, STATUS_KEYWORDS[keyword])
    if keyword == "cancelled()":
        raise ConditionError("cancelled() alone never holds: runnerlib starts no step once the job is cancelled; "
                             "what must run after a cancellation belongs in a CLEANUP plugin")
    parser = _Parser(stripped)
    expression = parser.parse()
    if parser.functions:
        return Condition(text, "expression", expression, frozenset(parser.functions))
    return Condition(text, "on_success", expression)


def _eval(node: Node, variables: Mapping[str, Any], status: Mapping[str, bool] | None = None) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "var":
        if node[1] not in variables:
            raise ConditionError(f"unknown variable {node[1]!r}")
        return variables[node[1]]
    if kind == "fn":
        if status is None or node[1] not in status:
            raise ConditionError(f"{node[1]}() needs the results of the steps before")
        return bool(status[node[1]])
    if kind == "list":
        return [_eval(item, variables, status) for item in node[1]]
    if kind == "not":
        return not _truthy(_eval(node[1], variables, status))
    if kind == "and":
        return _truthy(_eval(node[1], variables, status)) and _truthy(_eval(node[2], variables, status))
    if kind == "or":
        return _truthy(_eval(node[1], variables, status)) or _truthy(_eval(node[2], variables, status))
    op, left, right = node[1], _eval(node[2], variables, status), _eval(node[3], variables, status)
    if op == "==":
        return _same(left, right)
    if op == "!=":
        return not _same(left, right)
    if op == "in":
        if isinstance(right, list):
            return any(_same(left, item) for item in right)
        return _text(left) in _text(right)
    # matches: a shell-style glob on the whole value ('release/*', 'v[0-9]*').
    return fnmatch.fnmatchcase(_text(left), _text(right))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _same(left: Any, right: Any) -> bool:
    # Job variables arrive as strings from the environment; compare by text so pr_number == 12 holds.
    return _text(left) == _text(right)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off", "none", "null")
    return bool(value)


# The spellings of a step's condition in a job file: runnerlib's, GitHub's (`if:`, any condition) and GitLab's
# (`when:`, a status keyword).
CONDITION_KEYS = ("condition", "if", "when")
WHEN_VALUES = ("on_success", "on_failure", "always")


def condition_spellings(data: Any) -> Any:
    """A step mapping with `if:` or `when:` turned into `condition:` (pydantic's before-validator of a step).
    Raises ValueError when more than one is given, or for a `when:` that is not a status keyword."""
    if not isinstance(data, Mapping):
        return data
    given = [key for key in CONDITION_KEYS if key in data]
    if given in ([], ["condition"]):
        return data
    if len(given) > 1:
        raise ValueError(f"give one of {', '.join(given)}: they are the same setting (the step's condition)")
    key, value = given[0], data[given[0]]
    if key == "when" and value not in WHEN_VALUES:
        raise ValueError(f"when: must be on_success, on_failure or always, not {value!r} (GitLab's manual, delayed "
                         "and never are not supported); an expression goes in `if:`")
    return {**{k: v for k, v in data.items() if k != key}, "condition": value}


def condition_spellings_schema(schema: dict[str, Any]) -> None:
    """Add `if` and `when` to a step's JSON Schema (pydantic's json_schema_extra): editors and "did you mean"
    know them. Giving more than one of the three is refused by condition_spellings."""
    props = schema.setdefault("properties", {})
    props["if"] = {"type": "string", "title": "If",
                   "description": "The step's condition as GitHub Actions spells it (same as `condition`)."}
    props["when"] = {"enum": list(WHEN_VALUES), "title": "When",
                     "description": "The step's condition as GitLab spells it (on_success, on_failure, always)."}
