"""atheris harness: secrets documents (JSON, YAML, KEY=VALUE detection and parsing) and URL credentials.

Run: .venv/bin/python fuzz/fuzz_secrets_file.py -atheris_runs=1000

Properties: parse_secrets_document returns (str, str) pairs or raises SecretsDocumentError naming the
origin; url_credentials never raises and returns non-empty strings; a `KEY: VALUE` line whose value is the
fuzz input never gets an error holding a 6-character fragment of the value (other than the rule's own text);
a number-looking value (`0x4c08...`, `0123`, `1_000`, `12.50`, `1e5`) is registered as written
(secret_numbers.py), whatever YAML parses it as.
"""

from __future__ import annotations

import re
import sys

import atheris

with atheris.instrument_imports():
    from runnerlib.security import secret_sources
    from runnerlib.security.secret_sources import (
        SecretsDocumentError,
        parse_secrets_document,
        url_credentials,
    )

OURS = " ".join(r for _k, r in secret_sources._YAML_RULES) + (
    " secrets document fuzz-value, line invalid YAML at key DBX appears twice (first on line would be lost: "
    "rename one the value starts with which YAML reads as a comment an anchor leaving it empty quote values "
    "that start with one of ! & * | > % @ ` { [ ? ' \" # (JSON and KEY=VALUE are also accepted) nested deeper "
    "than levels expected a mapping or a list (JSON, YAML) or KEY=VALUE lines entry is a expected a string "
    "more than values (YAML aliases expanding?)")


def TestOneInput(data: bytes) -> None:
    try:
        pairs = parse_secrets_document(data, "fuzz-input")
    except SecretsDocumentError as exc:
        if not str(exc).startswith("secrets document fuzz-input"):
            raise AssertionError(f"error does not name the origin: {exc}") from None
    else:
        for name, value in pairs:
            if not isinstance(name, str) or not isinstance(value, str):
                raise AssertionError(f"bad pair types {type(name)} {type(value)}")
    text = data.decode("utf-8", "replace")
    value = text.replace("\n", " ").replace("\r", " ")
    try:
        pairs = parse_secrets_document(f"FIRST: x\nDBX: {value}\nLAST: y\n", "fuzz-value")
        number = value.strip(" \t")
        if re.fullmatch(r"[-+]?[0-9][0-9_.:xXoOeE+-]*", number) and number not in {v for n, v in pairs if n == "DBX"}:
            raise AssertionError(f"the number {number!r} is not registered as written")
    except SecretsDocumentError as exc:
        message = str(exc)
        for i in range(len(value) - 5):
            if value[i:i + 6] in message and value[i:i + 6] not in OURS:
                raise AssertionError(f"error {message!r} holds part of the value {value!r}") from None
    for cred in url_credentials(text):
        if not cred:
            raise AssertionError("empty credential")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
