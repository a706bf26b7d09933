"""atheris harness: the encoded forms of a secret decode back to it (so they are what encoders produce).

Run: .venv/bin/python fuzz/fuzz_variants.py -atheris_runs=1000

Properties: secret_variants never raises and returns distinct non-empty forms; every base64 form occurs in
the base64 of the secret embedded after 0, 1 or 2 other bytes; every percent form (each encoder family)
unquotes to the secret; hex forms (also wrapped as `xxd -p` wraps them) decode to it; JSON
forms load back to it; the `set -x` single-quote form, quoted, is one shell word equal to the secret.
"""

from __future__ import annotations

import base64
import json
import shlex
import sys
import urllib.parse

import atheris

with atheris.instrument_imports():
    from runnerlib.security.variants import (
        base64_forms,
        encoded_forms,
        hex_forms,
        percent_forms,
        secret_variants,
    )


def TestOneInput(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    prefix = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 5))
    suffix = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 5))
    secret = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 64))
    if not secret:
        return
    forms = secret_variants(secret, min_length=1)
    if len(forms) != len(set(forms)) or not all(forms) or forms[0] != secret:
        raise AssertionError("variants not distinct, empty, or not led by the value")

    encoded = base64.b64encode(prefix + secret + suffix)
    aligned = base64_forms(secret)[1 + len(prefix) % 3]
    if aligned not in encoded:
        raise AssertionError(f"base64 alignment {len(prefix) % 3} form not in the embedded encoding")

    enc = encoded_forms(secret)
    quoted = urllib.parse.quote_from_bytes(secret, safe="").encode()
    if quoted != secret and quoted not in enc:
        raise AssertionError("RFC 3986 percent form missing")
    for form in percent_forms(secret):
        # Form encoders write a space as '+' and escape a real '+'; the others keep '+' as is.
        if secret not in (urllib.parse.unquote_to_bytes(form), urllib.parse.unquote_to_bytes(form.replace(b"+", b" "))):
            raise AssertionError("percent form does not decode to the secret")
    for form in hex_forms(secret):
        if bytes.fromhex(form.decode()) != secret:  # fromhex skips the line breaks of the wrapped forms
            raise AssertionError("hex form does not decode to the secret")
        if form not in enc:
            raise AssertionError("hex form missing")
    try:
        text = secret.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        escaped = json.dumps(text)[1:-1].encode()
        if escaped not in enc or json.loads(b'"' + escaped + b'"') != text:
            raise AssertionError("JSON form missing or does not round-trip")
        single = secret.replace(b"'", b"'\\''")
        if single not in enc and single != secret:
            raise AssertionError("set -x form missing")
        if "\x00" not in text and all(c >= " " or c in "\t\n" for c in text):
            if shlex.split("'" + single.decode() + "'") != [text]:
                raise AssertionError("set -x form is not one shell word equal to the secret")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
