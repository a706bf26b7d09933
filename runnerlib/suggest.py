""""Did you mean" for unknown keys: the close match among the keys a document may hold at that place.

pydantic says "Extra inputs are not permitted" for a misspelt key; this turns that into "unknown key
'depend_on' (did you mean 'depends_on'?)" by looking up, in the model's JSON Schema, which keys the mapping
at the error's location allows (through $ref, anyOf/oneOf/allOf, items and additionalProperties). Written
by hand because pydantic has no such lookup; difflib does the matching. Imports nothing from runnerlib.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Schema = Mapping[str, Any]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest known name, or '' when none is close."""
    close = difflib.get_close_matches(name, sorted(set(known)), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _expand(node: Schema, root: Schema, depth: int = 0) -> list[Schema]:
    """`node` with $ref resolved and anyOf/oneOf/allOf flattened into the schemas it may be."""
    if depth > 20 or not isinstance(node, Mapping):
        return []
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = root.get("$defs", {}).get(ref.rsplit("/", 1)[-1])
        return _expand(target, root, depth + 1) if target is not None else []
    out = [node]
    for key in ("anyOf", "oneOf", "allOf"):
        for option in node.get(key, ()) or ():
            out.extend(_expand(option, root, depth + 1))
    return out


def _children(node: Schema, part: Any, root: Schema) -> list[Schema]:
    found: list[Schema] = []
    for schema in _expand(node, root):
        if isinstance(part, int):
            items = schema.get("items")
            if isinstance(items, Mapping):
                found.append(items)
            continue
        props = schema.get("properties") or {}
        if part in props:
            found.append(props[part])
        elif isinstance(schema.get("additionalProperties"), Mapping):
            found.append(schema["additionalProperties"])
    return found


def known_keys(schema: Schema, loc: Sequence[Any]) -> list[str]:
    """The keys allowed in the mapping that holds `loc[-1]` (loc as pydantic reports it)."""
    nodes: list[Schema] = [schema]
    for part in loc[:-1]:
        nxt = [child for node in nodes for child in _children(node, part, schema)]
        if nxt:
            nodes = nxt
        elif not (isinstance(part, str) and ("[" in part or "-" in part)):
            return []  # a place the schema does not describe (pydantic's union tags pass through)
    keys: set[str] = set()
    for node in nodes:
        for option in _expand(node, schema):
            keys.update(option.get("properties") or {})
    return sorted(keys)


def unknown_key_message(error: Mapping[str, Any], schema: Schema) -> str | None:
    """For a pydantic `extra_forbidden` error: "unknown key 'x' (did you mean 'y'?)"; None for other errors."""
    if error.get("type") != "extra_forbidden":
        return None
    loc = tuple(error.get("loc", ()))
    if not loc:
        return None
    name = str(loc[-1])
    return f"unknown key {name!r}{did_you_mean(name, known_keys(schema, loc))}"
