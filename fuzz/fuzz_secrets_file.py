"""atheris harness: secrets documents (JSON, YAML, KEY=VALUE detection and parsing) and URL credentials.

Run: .venv/bin/python fuzz/fuzz_secrets_file.py -atheris_runs=1000

Properties: parse_secrets_document returns (str, str) pairs or raises SecretsDocumentError naming the
origin; url_credentials never raises and returns non-empty strings.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from runnerlib.security.secret_sources import (
        SecretsDocumentError,
        parse_secrets_document,
        url_credentials,
    )


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
    for cred in url_credentials(text):
        if not cred:
            raise AssertionError("empty credential")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
