"""A secret's characters printed as a list (`print(list(s))`, `json.dumps(list(s))`, `JSON.stringify([...s])`,
`jq -c 'split("")'`): each item quoted apart, so no fragment of the value is whole (escape_forms.char_list_forms).

Each test runs the real programs where they are installed, takes the list's quotes and separators out of the masked
output and looks there for fragments of the secret; the control runs the same with the forms off, and finds them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runnerlib.execution.process import run_process
from runnerlib.security import variants
from runnerlib.security.escape_forms import char_list_forms
from runnerlib.security.registry import SecretRegistry
from runnerlib.testing import assert_no_fragment, stream_through, write_splits

SECRETS = ["Zq8vN3kLp2Xr7TmW9bYc", "p@ss w0rd!&x", "Pässwört-Grüße-9", "it's \"quoted\" \\x"]

PY = sys.executable
PRINTERS = {
    "python list": [PY, "-c", "import os; print(list(os.environ['S']))"],
    "python tuple": [PY, "-c", "import os; print(tuple(os.environ['S']))"],
    "python json": [PY, "-c", "import json, os; print(json.dumps(list(os.environ['S'])))"],
    "python json raw": [PY, "-c", "import json, os; print(json.dumps(list(os.environ['S']), ensure_ascii=False))"],
    "node": ["node", "-e", "console.log(JSON.stringify([...process.env.S]))"],
    "jq -c": ["jq", "-cn", 'env.S | split("")'],
}


def _printed(name: str, secret: str) -> bytes | None:
    argv = PRINTERS[name]
    if shutil.which(argv[0]) is None:
        return None
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "S": secret}
    return subprocess.run(argv, capture_output=True, env=env, check=True).stdout


def _undone(masked: bytes) -> bytes:
    """The list read back as text: whatever the items were, their quotes and separators out (the replacement too)."""
    try:
        items = json.loads(masked)
        return "".join(items).encode()
    except ValueError:
        pass
    text = masked.decode("utf-8", "replace").strip().strip("[]()")
    return text.replace("', '", "").replace("\", \"", "").replace("\", '", "").replace("', \"", "").encode()


def _leaks(registry: SecretRegistry, secret: str) -> list[str]:
    found = []
    for name in PRINTERS:
        printed = _printed(name, secret)
        if printed is None:
            continue
        try:
            assert_no_fragment(_undone(registry.mask(printed)), [secret.encode()], min_fragment=6)
        except AssertionError:
            found.append(name)
    return found


def _registry(secret: str) -> SecretRegistry:
    registry = SecretRegistry(background_merge=False)
    registry.add(secret, source="test")
    return registry


@pytest.mark.parametrize("secret", SECRETS, ids=range(len(SECRETS)))
def test_a_secret_printed_as_a_list_of_characters_is_masked(secret: str) -> None:
    assert _leaks(_registry(secret), secret) == []


def test_without_the_forms_they_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: with the list forms off, every printer that is installed leaks every secret."""
    monkeypatch.setattr(variants, "char_list_forms", lambda value: [])
    installed = [name for name, argv in PRINTERS.items() if shutil.which(argv[0]) is not None]
    for secret in SECRETS:
        assert _leaks(_registry(secret), secret) == installed, secret


def test_the_forms() -> None:
    assert char_list_forms(b"ab1") == [b"a', 'b', '1", b'a", "b", "1', b'a","b","1']
    assert char_list_forms("äb".encode()) == ["ä', 'b".encode(), 'ä", "b'.encode(), b'\\u00e4", "b',
                                               'ä","b'.encode(), b'\\u00e4","b']
    assert char_list_forms(b"a") == [] and char_list_forms(b"\xff\xfe") == []  # one character; not UTF-8


def test_a_trusted_step_printing_its_secret_as_a_list_shows_nothing() -> None:
    secret = "Zq8vN3kLp2Xr7TmW9bYc"
    script = f"{PY} -c 'import os, json; s = os.environ[\"S\"]; print(list(s)); print(json.dumps(list(s)))'"
    result = run_process(script, registry=_registry(secret), env={**os.environ, "S": secret}, name="leaky")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["['***']", '["***"]'], result.output


_VALUE = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_categories=["Cs"]), min_size=8,
                 max_size=30).filter(lambda s: len(set(s)) >= 6)


@settings(max_examples=60, deadline=None)
@given(value=_VALUE, before=st.text("abc xyz=:[", max_size=20), data=st.data())
def test_any_value_as_a_list_at_any_split(value: str, before: str, data: st.DataObject) -> None:
    """Printed as Python and JSON print a list, after any text, in a stream cut anywhere: masked as in the whole
    output, and no 6-character piece of the value is left once the list is read back."""
    registry = _registry(value)
    for shown in (str(list(value)), json.dumps(list(value)), json.dumps(list(value), separators=(",", ":"))):
        out = (before + shown + "\n").encode()
        masked = registry.mask(out)
        assert stream_through(registry, data.draw(write_splits(out))) == masked
        assert_no_fragment(_undone(masked[len(before.encode()):]), [value.encode()], min_fragment=6)
