"""Numbers in a JSON or YAML secrets document keep the text the user wrote.

YAML reads `0x4c08...` (an Ethereum private key), `0123456` (a PIN: YAML 1.1 octal), `1_234_567` and `190:20:30`
as integers, and `12.50` as a float; JSON reads `1.50` and `1e5` as floats. Registering only `str()` of the
parsed number (`3449...`, `42798`, `12.5`) left the value as written, which is what a step prints, in clear.
A number leaf is therefore registered twice: as written and as Python prints the parsed number.
"""

from __future__ import annotations

import json
from typing import Any


class NumberText(str):
    """A number's source text (the str itself) and its parsed value (`parsed`)."""

    parsed: Any

    def __new__(cls, text: str, parsed: Any) -> NumberText:
        self = super().__new__(cls, text)
        self.parsed = parsed
        return self

    def spellings(self) -> list[str]:
        """The text as written, then Python's `str()` of the number when it differs."""
        return list(dict.fromkeys([str.__str__(self), str(self.parsed)]))


def keep_yaml_number_text(loader: Any) -> None:
    """Make a SafeLoader subclass build int and float scalars as NumberText (the standard constructor still
    checks the value: `!!int hunter22` fails as before)."""
    import yaml

    for tag, build in (("tag:yaml.org,2002:int", yaml.constructor.SafeConstructor.construct_yaml_int),
                       ("tag:yaml.org,2002:float", yaml.constructor.SafeConstructor.construct_yaml_float)):
        loader.add_constructor(tag, lambda self, node, build=build: NumberText(node.value, build(self, node)))


def json_loads_keeping_number_text(text: str, **kwargs: Any) -> Any:
    """json.loads with int and float leaves as NumberText."""
    return json.loads(text, parse_int=lambda s: NumberText(s, int(s)), parse_float=lambda s: NumberText(s, float(s)),
                      **kwargs)
