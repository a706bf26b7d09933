"""Branch and path globs as the workflow files define them: `*` within a segment, `**` across segments.

Hand-written because neither fnmatch (its `*` crosses `/`) nor pathlib's `match` (no `**` before 3.13, and
it matches from the right) has these semantics. A pattern compiles once to an anchored regular expression:

- `*` matches any run of characters except `/`; `?` one character except `/`;
- `**` as a whole segment matches zero or more segments: `docs/**` matches `docs/a/b.md` (and `docs`),
  `**/test_*.py` matches `test_x.py` and `a/b/test_x.py`, `a/**/b` matches `a/b` and `a/x/y/b`;
- `**` inside a segment (`a**b`) matches any run of characters, `/` included;
- every other character is literal (no character classes, no braces: branch names use `[` and `{` rarely,
  and a literal reading never surprises).

Example::

    >>> glob_match("release/*", "release/1.2")
    True
    >>> glob_match("release/*", "release/1.2/hotfix")
    False
    >>> glob_match("src/**/*.py", "src/pkg/mod/x.py")
    True
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

__all__ = ["compile_glob", "glob_match", "match_any"]


@functools.lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The anchored regular expression for `pattern` (cached)."""
    segments: list[str] = []
    for segment in pattern.split("/"):
        if not (segment == "**" and segments and segments[-1] == "**"):  # `**/**` is `**`
            segments.append(segment)
    out: list[str] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == "**":
            if index == last:
                # `a/**` also matches `a` itself (the directory), as in .gitignore and GitHub's paths filter.
                if out and out[-1] == "/":
                    out.pop()  # the "/" before `**`
                    out.append("(?:/.*)?")
                else:
                    out.append(".*")
            else:
                out.append("(?:.*/)?")
            continue
        out.append(_segment_regex(segment))
        if index != last:
            out.append("/")
    return re.compile("".join(out), re.DOTALL)


def _segment_regex(segment: str) -> str:
    parts: list[str] = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            if segment.startswith("**", i):
                parts.append(".*")
                while i < len(segment) and segment[i] == "*":
                    i += 1
                continue
            parts.append("[^/]*")
        elif char == "?":
            parts.append("[^/]")
        else:
            parts.append(re.escape(char))
        i += 1
    return "".join(parts)


def glob_match(pattern: str, text: str) -> bool:
    """True if the whole of `text` matches `pattern`."""
    return compile_glob(pattern).fullmatch(text) is not None


def match_any(patterns: Iterable[str], text: str) -> bool:
    """True if `text` matches one of `patterns`, where a pattern starting with `!` excludes what it matches.

    Patterns are read in order and the last one that matches decides (GitHub Actions' rule), so
    `["release/**", "!release/old/**"]` keeps every release branch but the old ones.
    """
    decided = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if glob_match(pattern[1:], text):
                decided = False
        elif glob_match(pattern, text):
            decided = True
    return decided
