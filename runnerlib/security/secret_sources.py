"""Every source of secrets a job can have, gathered into the job's one SecretRegistry.

Invariant: a value learnt from any source is added to the registry before anything that could print it runs,
and nothing here ever writes a value anywhere else (return values, log lines and exception texts name the
source: a variable name, a file and line, an option; never the value).

Sources, in the order they are read (see docs/secrets.md):

1. variables named by REACTORCIDE_SECRET_ENV_NAMES / --secret-env-names (comma-separated), looked up in the
   process environment and in the job env;
2. variables whose names match the default secret-name patterns (`secret_names.is_secret_name`);
3. the API token REACTORCIDE_API_TOKEN and the store password REACTORCIDE_SECRETS_PASSWORD;
4. credentials inside URLs in any of those environments (`https://user:pass@host`);
5. REACTORCIDE_SECRET_VALUES_LIST / --secret-values-list (comma-separated values);
6. a secrets file (--secrets-file / REACTORCIDE_SECRETS_FILE), an inherited descriptor (--secrets-fd N) and
   stdin, each in JSON, YAML or KEY=VALUE form (detected; see `parse_secrets_document`).

Secrets on runnerlib's own argv are accepted by the CLI for compatibility, but `argv_secret_options` lets it
warn: the command line is world-readable in /proc/PID/cmdline from the moment the process starts, before
anything (selfprotect.py) can overwrite it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from runnerlib.security import secret_names
from runnerlib.security.secret_numbers import (
    NumberText,
    json_loads_keeping_number_text,
    keep_yaml_number_text,
)

log = logging.getLogger("runnerlib.secrets")

ENV_NAMES_VAR = "REACTORCIDE_SECRET_ENV_NAMES"
VALUES_LIST_VAR = "REACTORCIDE_SECRET_VALUES_LIST"
SECRETS_FILE_VAR = "REACTORCIDE_SECRETS_FILE"
API_TOKEN_VAR = "REACTORCIDE_API_TOKEN"
# Always secret whatever the name patterns say: the worker's lease token, the store password, the socket token.
ALWAYS_SECRET_VARS = (API_TOKEN_VAR, "REACTORCIDE_SECRETS_PASSWORD", "REACTORCIDE_SECRETS_TOKEN")

# A secrets document larger than this is refused: it is certainly a wrong file, and reading it whole would
# let a runaway pipe on stdin or on an fd exhaust memory.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024

# The options whose value is a secret by definition; with any other option, a value that contains a known
# secret is reported too (see argv_secret_options).
SECRET_VALUED_OPTIONS = ("--secret-values-list",)


class Registry(Protocol):
    """The part of SecretRegistry that the sources use (kept structural so tests can pass a fake)."""

    def add(self, value: str | bytes, *, source: str) -> bool: ...

    def secrets(self) -> list[bytes]: ...


class SecretsDocumentError(ValueError):
    """A secrets file, fd or stdin that cannot be read: names the origin and line, never a value."""

    def __init__(self, origin: str, line: int | None, rule: str) -> None:
        where = f"{origin}, line {line}" if line else origin
        super().__init__(f"secrets document {where}: {rule}")
        self.origin = origin
        self.line = line
        self.rule = rule


@dataclass
class _Tally:
    """Counts what one source contributed, for the one-line description `load_secrets` returns."""

    label: str
    added: int = 0
    refused: int = 0

    def describe(self) -> str:
        text = f"{self.label}: {self.added} value(s)"
        return text + (f", {self.refused} refused (too short)" if self.refused else "")


# A job env value that is (or holds) a store reference is registered once resolved, by secret_store; the
# reference text itself is not a secret, and masking it would hide which entry a job uses.
_STORE_REF = "${secret:"


def _add(registry: Registry, value: str, source: str, tally: _Tally) -> None:
    if value is None or not str(value).strip():
        return
    if registry.add(value, source=source):
        tally.added += 1
    else:
        tally.refused += 1


def split_list(text: str | None) -> list[str]:
    """Comma-separated list -> items, blanks dropped (`"A, B,,C"` -> `["A", "B", "C"]`)."""
    if not text:
        return []
    return [item.strip() for item in text.split(",") if item.strip()]


def split_values_list(text: str | None) -> list[str]:
    """REACTORCIDE_SECRET_VALUES_LIST -> values: split at commas, surrounding blanks trimmed (as users write
    `a, b`), empty items dropped. Inner spaces are kept."""
    return split_list(text)


# --- credentials in URLs -------------------------------------------------------------------------------------

# scheme://userinfo@host: userinfo stops at the first '/', '?', '#', whitespace or quote, and runs greedily to
# the LAST '@' before them, as URL parsers do with an unescaped '@' in a password.
_URL_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://([^/?#\s\"'<>@]*(?:@[^/?#\s\"'<>@]*)*)@[^\s/?#\"'<>@]")

# A username alone (https://TOKEN@host) is treated as a credential only from this length on: tokens used as
# usernames (GitHub, GitLab) are long, while "git@" or "deploy@" are ordinary words we must not mask.
TOKEN_AS_USERNAME_MIN_LENGTH = 16


def url_credentials(text: str) -> list[str]:
    """The credential strings inside every URL in `text`.

    For `https://user:pa%40ss@host` returns `user:pa%40ss`, `pa%40ss`, `user:pa@ss` and `pa@ss`: the forms that
    can appear in output (git and curl print the encoded form, tools that decode print the other).

    >>> url_credentials("git clone https://bot:s3cr3t@example.com/r.git")
    ['bot:s3cr3t', 's3cr3t']
    """
    found: list[str] = []
    for match in _URL_USERINFO.finditer(text):
        userinfo = match.group(1)
        user, sep, password = userinfo.partition(":")
        forms: list[str] = []
        if sep and password:
            forms += [userinfo, password]
        elif not sep and len(user) >= TOKEN_AS_USERNAME_MIN_LENGTH:
            forms.append(user)
        for form in list(forms):
            decoded = urllib.parse.unquote(form)
            if decoded != form:
                forms.append(decoded)
        for form in forms:
            if form and form not in found:
                found.append(form)
    return found


# Query parameters whose value is a credential, whatever the service: their value is redacted for display.
_SECRET_QUERY = re.compile(
    r"([?&;][^=&#\s\"'<>]*(?:token|secret|passw(?:or)?d|passphrase|api[_-]?key|access[_-]?key|signature|sig|"
    r"credential|auth)[^=&#\s\"'<>]*=)[^&#\s\"'<>]+", re.IGNORECASE)


def redact_url_credentials(text: str, replacement: str = "***") -> str:
    """`text` with the userinfo of every URL (`https://user:pw@host` -> `https://***@host`) and the value of
    every credential-like query parameter (`?private_token=...`, `&X-Amz-Signature=...`, `&sig=...`) replaced.

    For printing configuration: whatever the origin of a URL (option, file, environment), its credentials are
    not shown. Unlike `url_credentials` this also hides a short username alone (`deploy@`): a display loses
    little by it.

    >>> redact_url_credentials("https://bot:s3cr3t@example.com/r.git?ref=main&access_token=abc")
    'https://***@example.com/r.git?ref=main&access_token=***'
    """
    def userinfo(match: re.Match[str]) -> str:
        start, end = match.span(1)
        whole = match.group(0)
        return whole[: start - match.start()] + replacement + whole[end - match.start():]

    text = _URL_USERINFO.sub(userinfo, text)
    return _SECRET_QUERY.sub(lambda m: m.group(1) + replacement, text)


# --- secrets documents: JSON, YAML, KEY=VALUE -----------------------------------------------------------------

_DOTENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.\-]*)\s*=(.*)$")


def _detect_format(text: str) -> str:
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped[0] in "{[":
            return "json"
        return "dotenv" if _DOTENV_LINE.match(line) else "yaml"
    return "empty"


def _dotenv_value(raw: str, origin: str, lineno: int, lines: list[str], index: int) -> tuple[str, int]:
    """Parse the value part of KEY=VALUE; double-quoted values may span lines (PEM keys). Returns (value, next)."""
    raw = raw.strip()
    if raw.startswith("'"):
        end = raw.find("'", 1)
        if end < 0:
            raise SecretsDocumentError(origin, lineno, "unterminated single-quoted value")
        if raw[end + 1 :].strip() and not raw[end + 1 :].strip().startswith("#"):
            raise SecretsDocumentError(origin, lineno, "unexpected text after the closing quote")
        return raw[1:end], index + 1
    if raw.startswith('"'):
        body = raw[1:]
        chunks: list[str] = []
        i = index
        while True:
            closing = _closing_double_quote(body)
            if closing >= 0:
                chunks.append(body[:closing])
                rest = body[closing + 1 :].strip()
                if rest and not rest.startswith("#"):
                    raise SecretsDocumentError(origin, i + 1, "unexpected text after the closing quote")
                break
            chunks.append(body)
            i += 1
            if i >= len(lines):
                raise SecretsDocumentError(origin, lineno, "unterminated double-quoted value")
            body = lines[i]
        joined = "\n".join(chunks)
        return _unescape_double_quoted(joined), i + 1
    # Unquoted: an inline comment needs a space before '#', as in shells and python-dotenv.
    value = re.split(r"\s+#", raw, maxsplit=1)[0].strip()
    return value, index + 1


def _closing_double_quote(text: str) -> int:
    escaped = False
    for pos, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return pos
    return -1


_DQ_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\", "$": "$"}


def _unescape_double_quoted(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: _DQ_ESCAPES.get(m.group(1), "\\" + m.group(1)), text, flags=re.S)


def _parse_dotenv(text: str, origin: str) -> list[tuple[str, str]]:
    # A list, not a dict: a key given twice keeps both values (the first is still a secret to mask).
    lines = text.splitlines()
    result: list[tuple[str, str]] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            index += 1
            continue
        match = _DOTENV_LINE.match(line)
        if not match:
            raise SecretsDocumentError(origin, index + 1, "expected KEY=VALUE (the file was read as KEY=VALUE)")
        value, index = _dotenv_value(match.group(2), origin, index + 1, lines, index)
        result.append((match.group(1), value))
    return result


# A secrets document is a flat list of values in practice; these bounds stop a YAML alias bomb ("billion
# laughs": a few lines that expand to billions of leaves) or absurd nesting from eating the runner.
MAX_LEAVES = 100_000
MAX_DEPTH = 64


def _leaves(data: Any, origin: str, path: str = "", depth: int = 0,
            budget: list[int] | None = None) -> Iterable[tuple[str, str]]:
    """Every scalar leaf of a JSON/YAML document as (where, value); booleans and nulls are not secrets."""
    budget = [MAX_LEAVES] if budget is None else budget
    if depth > MAX_DEPTH:
        raise SecretsDocumentError(origin, None, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _leaves(value, origin, f"{path}.{key}" if path else str(key), depth + 1, budget)
    elif isinstance(data, list):
        for pos, value in enumerate(data):
            yield from _leaves(value, origin, f"{path}[{pos}]", depth + 1, budget)
    elif isinstance(data, bool) or data is None:
        return
    elif isinstance(data, (str, int, float)):
        budget[0] -= 1
        if budget[0] < 0:
            raise SecretsDocumentError(origin, None, f"more than {MAX_LEAVES} values (YAML aliases expanding?)")
        for value in data.spellings() if isinstance(data, NumberText) else [str(data)]:
            yield path or "<document>", value
    else:
        # YAML can produce dates and binary; a secret is text, so say which entry is odd.
        raise SecretsDocumentError(origin, None, f"entry {path or '<document>'} is a {type(data).__name__}, "
                                                 "expected a string")


def _keep_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose repeated keys keep every value (json.loads keeps only the last, and the first would
    never be masked); a repeat is named `KEY (2)`."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        name, n = key, 1
        while name in out:
            n += 1
            name = f"{key} ({n})"
        out[name] = value
    return out


def parse_secrets_document(data: bytes | str, origin: str) -> list[tuple[str, str]]:
    """Parse a secrets document into (name, value) pairs; the format is detected.

    - JSON: an object (its string/number leaves, nested objects flattened) or an array of strings;
    - KEY=VALUE (dotenv): chosen when the first significant line looks like `KEY=...` (optionally `export`);
      `#` comments, single quotes literal, double quotes with \\n escapes and multi-line values;
    - YAML: anything else; a mapping or a list, leaves as in JSON.

    Errors raise SecretsDocumentError naming `origin` and the line, never a value.

    >>> parse_secrets_document("DB_PASSWORD=hunter22\\n", "f")
    [('DB_PASSWORD', 'hunter22')]
    """
    if isinstance(data, bytes):
        if len(data) > MAX_DOCUMENT_BYTES:
            raise SecretsDocumentError(origin, None, f"larger than the {MAX_DOCUMENT_BYTES}-byte limit")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise SecretsDocumentError(origin, line, "not valid UTF-8") from None
    else:
        text = data
    text = text.removeprefix("\ufeff")
    kind = _detect_format(text)
    if kind == "empty":
        return []
    if kind == "dotenv":
        return _parse_dotenv(text, origin)
    if kind == "json":
        try:
            parsed = json_loads_keeping_number_text(text, object_pairs_hook=_keep_duplicates)
        except json.JSONDecodeError as exc:
            # exc.msg never quotes the document; exc.lineno points at the fault.
            raise SecretsDocumentError(origin, exc.lineno, f"invalid JSON ({exc.msg})") from None
        except RecursionError:
            raise SecretsDocumentError(origin, None, "invalid JSON (nested too deeply)") from None
    else:
        parsed = _load_yaml(text, origin)
        if not isinstance(parsed, (dict, list)):
            raise SecretsDocumentError(origin, 1, "expected a mapping or a list (JSON, YAML) or KEY=VALUE lines")
    return list(_leaves(parsed, origin))


# What a YAML error means in a secrets file, keyed by a phrase of PyYAML's problem text (with every quoted part
# removed: PyYAML quotes the offending tag, alias, anchor or character, i.e. part of the value). The rule is
# ours, so an error never carries a byte of the document, and it says how to fix the line.
_QUOTE_IT = "; put the value in single quotes"
_YAML_RULES = (
    ("constructor for the tag", "a value starting with `!` is read as a YAML tag" + _QUOTE_IT),
    ("undefined tag handle", "a value starting with `!` is read as a YAML tag" + _QUOTE_IT),
    ("while scanning a tag", "a value starting with `!` is read as a YAML tag" + _QUOTE_IT),
    ("undefined alias", "a value starting with `*` is read as a YAML alias" + _QUOTE_IT),
    ("while scanning an alias", "a value starting with `*` is read as a YAML alias" + _QUOTE_IT),
    ("while scanning an anchor", "a value starting with `&` is read as a YAML anchor" + _QUOTE_IT),
    ("chomping or indentation", "a value starting with `|` or `>` is read as a YAML block scalar" + _QUOTE_IT),
    ("while scanning a block scalar", "a value starting with `|` or `>` is read as a YAML block scalar" + _QUOTE_IT),
    ("cannot start any token", "a value starts with a character YAML reserves (`@`, a backtick, `%`, a tab)"
                               + _QUOTE_IT),
    ("unknown escape character", "an unknown backslash escape inside double quotes; use single quotes"),
    ("while scanning a double-quoted", "a double quote that is never closed, or a bad escape inside it"),
    ("while scanning a quoted scalar", "a quote that is never closed; quote the whole value, doubling "
                                       "single quotes inside single quotes"),
    ("while parsing a flow", "a value starting with `{` or `[` is read as a YAML collection" + _QUOTE_IT),
    ("mapping values are not allowed", "a `: ` inside an unquoted value, or a line indented more than the one "
                                       "before" + _QUOTE_IT),
    ("mapping keys are not allowed", "a value starting with `? ` is read as a YAML key" + _QUOTE_IT),
    ("while parsing a block", "bad indentation: every KEY: value line of a mapping starts in the same column"),
    ("while scanning a simple key", "a line without `: ` inside a mapping (or a key longer than 1024 "
                                    "characters)"),
    ("found duplicate anchor", "the same YAML anchor (`&`) twice" + _QUOTE_IT),
    ("while scanning a directive", "a line starting with `%` is read as a YAML directive" + _QUOTE_IT),
    ("failed to decode base64", "a `!!binary` value that is not base64" + _QUOTE_IT),
)
_YAML_KEY_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*:(?:\s|$)")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def _yaml_key(lines: list[str], line: int) -> str | None:
    """The key of the mapping entry around 0-based `line`: on that line, else the nearest one above."""
    for number in range(min(line, len(lines) - 1), max(-1, line - 50), -1):
        match = _YAML_KEY_LINE.match(lines[number])
        if match:
            return match.group(1)
    return None


def _yaml_error(exc: Any, text: str, origin: str) -> SecretsDocumentError:
    """A SecretsDocumentError for a PyYAML error: file, line, key and a rule of ours; never the value."""
    mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    context = getattr(exc, "context", None) or ""
    if context_mark is not None and (mark is None or context.startswith(("while scanning", "while parsing a flow"))
                                     or mark.index >= len(text.rstrip())):
        mark = context_mark  # an unclosed quote, bracket or tag: the fault is where it opened, not where it ended
    phrase = _QUOTED.sub("", f"{getattr(exc, 'context', '') or ''} {getattr(exc, 'problem', '') or ''}")
    rule = next((r for key, r in _YAML_RULES if key in phrase),
                "quote values that start with one of ! & * | > % @ ` { [ ? ' \" #")
    lines = text.splitlines()
    key = _yaml_key(lines, mark.line) if mark is not None and lines else None
    where = f" at key {key}" if key else ""
    return SecretsDocumentError(origin, mark.line + 1 if mark is not None else None,
                                f"invalid YAML{where}: {rule} (JSON and KEY=VALUE are also accepted)")


def _load_yaml(text: str, origin: str) -> Any:
    """yaml.safe_load, refusing what would silently lose a secret: a duplicate key (the first value would never
    be registered) and a value emptied by a `#` comment or an `&` anchor."""
    import yaml  # on first use: most jobs give their secrets as env names, never as a YAML document

    lines = text.splitlines()

    class SecretsLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                line = key_node.start_mark.line
                if key_node.value in seen:
                    raise SecretsDocumentError(origin, line + 1, f"key {_safe_key(key_node.value)} appears twice "
                                               f"(first on line {seen[key_node.value] + 1}); the first value "
                                               "would be lost: rename one")
                seen[key_node.value] = line
                if (isinstance(value_node, yaml.ScalarNode) and value_node.tag == "tag:yaml.org,2002:null"
                        and value_node.value not in ("", "~", "null", "Null", "NULL")):
                    raise SecretsDocumentError(origin, line + 1, f"key {_safe_key(key_node.value)}: a `!!null` tag "
                                               "drops the value" + _QUOTE_IT)
                if (isinstance(value_node, yaml.ScalarNode) and value_node.value == "" and value_node.style is None
                        and key_node.end_mark.line < len(lines)):
                    rest = lines[key_node.end_mark.line][key_node.end_mark.column:].lstrip(" \t:")
                    if rest[:1] in ("#", "&"):
                        what = "a comment" if rest[0] == "#" else "an anchor"
                        raise SecretsDocumentError(origin, line + 1, f"key {_safe_key(key_node.value)}: the value "
                                                   f"starts with `{rest[0]}`, which YAML reads as {what}, leaving "
                                                   "it empty" + _QUOTE_IT)
            return super().construct_mapping(node, deep=deep)

        def construct_object(self, node: Any, deep: bool = False) -> Any:
            where[0] = node.start_mark.line  # for the error of a constructor that fails outside YAMLError
            return super().construct_object(node, deep=deep)

    keep_yaml_number_text(SecretsLoader)
    where = [0]
    try:
        return yaml.load(text, Loader=SecretsLoader)  # noqa: S506 - a SafeLoader subclass
    except SecretsDocumentError:
        raise
    except RecursionError:
        raise SecretsDocumentError(origin, None, "invalid YAML (nested too deeply)") from None
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text, origin) from None
    except Exception:  # noqa: BLE001 - see below
        # A standard type tag that does not fit its value (`!!int x`, `!!timestamp x`): PyYAML lets ValueError
        # and others through, whose messages quote the value (int() does), or fails inside (AttributeError).
        key = _yaml_key(lines, where[0]) if lines else None
        raise SecretsDocumentError(origin, where[0] + 1, f"invalid YAML{' at key ' + key if key else ''}: a "
                                   "value with a `!!` type tag that does not fit it" + _QUOTE_IT) from None


def _safe_key(key: str) -> str:
    # Keys are names, shown so the user finds the line; a key that does not look like one is not echoed.
    return key if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}", key) else "(not shown)"


def read_secrets_file(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Read and parse a secrets file (see parse_secrets_document). A missing file is one clear error."""
    origin = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise SecretsDocumentError(origin, None, f"cannot read it ({exc.strerror})") from None
    return parse_secrets_document(data, origin)


def read_secrets_fd(fd: int) -> list[tuple[str, str]]:
    """Read an inherited descriptor to EOF, close it, and parse it (a pipe from the worker, never a path)."""
    origin = f"fd {fd}"
    try:
        with open(fd, "rb", closefd=True) as handle:
            data = handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise SecretsDocumentError(origin, None, f"cannot read it ({exc.strerror})") from None
    return parse_secrets_document(data, origin)


# --- the whole set ------------------------------------------------------------------------------------------


def load_secrets(
    registry: Registry,
    *,
    environ: Mapping[str, str] | None = None,
    job_env: Mapping[str, str] | None = None,
    secret_env_names: str | Iterable[str] | None = None,
    secret_values_list: str | Iterable[str] | None = None,
    secrets_file: str | os.PathLike[str] | None = None,
    secrets_fd: int | None = None,
    read_stdin: bool = False,
    stdin: Callable[[], bytes] | None = None,
) -> list[str]:
    """Add every secret from every source to `registry`; return one description per source used (no values).

    `environ` defaults to os.environ. REACTORCIDE_SECRET_ENV_NAMES and REACTORCIDE_SECRET_VALUES_LIST are read
    from `environ` and `job_env` in addition to the explicit arguments; REACTORCIDE_SECRETS_FILE from `environ`
    when `secrets_file` is not given. `stdin` (a callable returning bytes) replaces sys.stdin for tests.

    Example::

        registry = SecretRegistry()
        for line in load_secrets(registry, job_env={"DB_URL": "postgres://app:pw1234@db/x"}):
            log.info("secrets: %s", line)      # e.g. "url credentials in DB_URL: 2 value(s)"
    """
    env = dict(os.environ if environ is None else environ)
    jenv = dict(job_env or {})
    scopes = (("environment", env), ("job env", jenv))
    used: list[str] = []

    def finish(tally: _Tally) -> None:
        if tally.added or tally.refused:
            used.append(tally.describe())

    # 1. named variables
    names: list[str] = []
    for source in (secret_env_names, env.get(ENV_NAMES_VAR), jenv.get(ENV_NAMES_VAR)):
        items = split_list(source) if isinstance(source, str) or source is None else [s.strip() for s in source]
        names += [n for n in items if n and n not in names]
    if names:
        tally = _Tally(f"named variables ({', '.join(names)})")
        missing = []
        for name in names:
            present = False
            for scope, mapping in scopes:
                if name in mapping:
                    present = True
                    if not (scope == "job env" and _STORE_REF in mapping[name]):
                        _add(registry, mapping[name], f"env {name} ({scope})", tally)
            if not present:
                missing.append(name)
        if missing:
            # Not an error: one names list is often shared by jobs that do not all get every variable.
            log.info("secret variables named but not set: %s", ", ".join(missing))
        finish(tally)

    # 2. names matching the default patterns, and 3. the always-secret variables
    for scope, mapping in scopes:
        matched = sorted(n for n in mapping if n not in names and
                         (n in ALWAYS_SECRET_VARS or secret_names.is_secret_name(n)))
        if matched:
            tally = _Tally(f"secret-looking names in the {scope} ({', '.join(matched)})")
            for name in matched:
                if not (scope == "job env" and _STORE_REF in mapping[name]):
                    _add(registry, mapping[name], f"env {name} ({scope})", tally)
            finish(tally)

    # 4. credentials in URLs, anywhere in either environment
    for scope, mapping in scopes:
        for name in sorted(mapping):
            creds = url_credentials(mapping[name]) if "://" in mapping[name] else []
            if creds:
                tally = _Tally(f"URL credentials in {name} ({scope})")
                for cred in creds:
                    _add(registry, cred, f"URL credentials in {name}", tally)
                finish(tally)

    # 5. value lists
    for label, source in (("--secret-values-list", secret_values_list),
                          (f"{VALUES_LIST_VAR} (environment)", env.get(VALUES_LIST_VAR)),
                          (f"{VALUES_LIST_VAR} (job env)", jenv.get(VALUES_LIST_VAR))):
        values = split_values_list(source) if isinstance(source, str) or source is None else list(source)
        if values:
            tally = _Tally(label)
            for value in values:
                _add(registry, value, label, tally)
            finish(tally)

    # 6. documents
    path = secrets_file if secrets_file is not None else env.get(SECRETS_FILE_VAR) or None
    documents: list[tuple[str, Callable[[], list[tuple[str, str]]]]] = []
    if path:
        documents.append((f"secrets file {path}", lambda: read_secrets_file(path)))
    if secrets_fd is not None:
        documents.append((f"secrets fd {secrets_fd}", lambda: read_secrets_fd(secrets_fd)))
    if read_stdin:
        def from_stdin() -> list[tuple[str, str]]:
            data = stdin() if stdin else sys.stdin.buffer.read(MAX_DOCUMENT_BYTES + 1)
            return parse_secrets_document(data, "stdin")
        documents.append(("secrets on stdin", from_stdin))
    for label, reader in documents:
        tally = _Tally(label)
        for name, value in reader():
            _add(registry, value, f"{label} ({name})", tally)
            for cred in url_credentials(value) if "://" in value else []:
                _add(registry, cred, f"{label} ({name}, URL credentials)", tally)
        finish(tally)
    return used


def load_step_env_secrets(registry: Registry, step_name: str, env: Mapping[str, str], *,
                           secret_env_names: Iterable[str] = ()) -> list[str]:
    """Register the secrets in one step's own `env:` block, before any step runs; describe them (no values).

    The same rules as the job env in `load_secrets`: variables named in `secret_env_names` or by
    REACTORCIDE_SECRET_ENV_NAMES, names matching the default patterns (`*_TOKEN`, `*_PASSWORD`, ...), and
    credentials in URLs. A `${secret:...}` reference is registered once resolved (secret_store), not as text.
    A trusted step gets these variables; without this, its output showed them in clear.
    """
    names = set(secret_env_names) | set(split_list(env.get(ENV_NAMES_VAR)))
    used: list[str] = []
    tally = _Tally(f"secret variables of step {step_name}")
    matched = sorted(n for n in env if n in names or n in ALWAYS_SECRET_VARS or secret_names.is_secret_name(n))
    for name in matched:
        if _STORE_REF not in env[name]:
            _add(registry, env[name], f"env {name} (step {step_name})", tally)
    for name in sorted(env):
        if "://" in env[name] and _STORE_REF not in env[name]:
            for cred in url_credentials(env[name]):
                _add(registry, cred, f"URL credentials in {name} (step {step_name})", tally)
    if tally.added or tally.refused:
        used.append(tally.describe() + (f" ({', '.join(matched)})" if matched else ""))
    return used


# --- argv ---------------------------------------------------------------------------------------------------


def argv_secret_options(argv: Sequence[str], secrets: Iterable[str | bytes], *,
                        flags: Collection[str] = ()) -> list[str]:
    """The options of `argv` that carried a secret: a secret-valued option, or any value containing a secret.

    Returns option names (`--secret-values-list`, `--job-env`) or `argument N` for positionals, never values.
    `flags` lists the options that take no value (otherwise `--opt X` is read as X being the option's value).
    Used to warn: argv is readable by every process on the host from the moment runnerlib starts, and
    overwriting it at start-up (selfprotect.py) only shortens that window (docs/secrets.md).

    >>> argv_secret_options(["run", "--job-env", "X=hunter22", "--dry-run"], ["hunter22"])
    ['--job-env']
    """
    needles = [s.encode() if isinstance(s, str) else bytes(s) for s in secrets]
    needles = [n for n in needles if n]
    found: list[str] = []
    pending_option: str | None = None
    for position, arg in enumerate(argv):
        if arg.startswith("--") and len(arg) > 2:
            option, eq, value = arg.partition("=")
            pending_option = None if eq or option in flags else option
            if not eq:
                continue
        elif pending_option is not None:
            option, value = pending_option, arg
            pending_option = None
        else:
            option, value = f"argument {position}", arg
        raw = value.encode("utf-8", "surrogateescape")
        secret_valued = option in SECRET_VALUED_OPTIONS and value.strip()
        if (secret_valued or any(n in raw for n in needles)) and option not in found:
            found.append(option)
    return found


def warn_argv_secrets(argv: Sequence[str], registry: Registry, warn: Callable[[str], None] | None = None,
                      *, flags: Collection[str] = ()) -> list[str]:
    """Warn (once, naming the options) if secrets arrived on argv; returns the option names."""
    options = argv_secret_options(argv, registry.secrets(), flags=flags)
    if options:
        message = (
            f"secret value(s) passed on the command line ({', '.join(options)}): any process on this host can "
            "read a command line while it exists, and runnerlib can only overwrite it after it has started. "
            "Use environment variables named by REACTORCIDE_SECRET_ENV_NAMES, --secrets-file, --secrets-fd "
            "or stdin instead (docs/secrets.md)."
        )
        (warn or log.warning)(message)
    return options

