"""A secret spaced out (`sed 's/./& /g'`) or reversed (`rev`): the two best-known ways round a log masker after
base64 (security/rearranged_forms.py).

Each test runs the real tools where it can, in a UTF-8 locale (characters) and in the C locale (bytes), undoes
the rearrangement on the masked output and looks there for fragments of the secret; each has a control with the
forms off, which finds them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runnerlib.execution.process import run_process
from runnerlib.security import variants
from runnerlib.security.rearranged_forms import rearranged_forms
from runnerlib.security.registry import SecretRegistry
from runnerlib.testing import assert_no_fragment, stream_through, write_splits

SECRETS = ["Zq8vN3kLp2Xr7TmW9bYc", "ghp_Xk9fQ2mLp0RtZ7vWa1b2c3d4e5f6g7h8", "p@ss w0rd!&x", "Pässwört-Grüße-9",
           "it's \"quoted\" $HOME"]
LOCALES = ["C.UTF-8", "C"]


def _registry(*values: str) -> SecretRegistry:
    registry = SecretRegistry(background_merge=False)
    for value in values:
        registry.add(value, source="test")
    return registry


def _tool(command: str, data: bytes, locale: str) -> bytes:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": locale}
    return subprocess.run(["sh", "-c", command], input=data, capture_output=True, env=env, check=True).stdout


def _document(secret: str) -> bytes:
    return f"deploy: token={secret} ok\nnext line\n".encode()


def _leaks(registry: SecretRegistry, secret: str, locale: str) -> list[str]:
    """Which of `sed 's/./& /g'` and `rev` leave a 6-byte fragment of `secret` in the masked output, undone: the
    spaces taken out (of the secret's too), each line reversed again (by characters, as `rev` reversed it)."""
    found = []
    doc = _document(secret)
    if _leaves(registry.mask(_tool("sed 's/./& /g'", doc, locale)).replace(b" ", b""), secret.replace(" ", "")):
        found.append("sed")
    if locale == "C" and not secret.isascii():
        return found  # `rev` refuses it: "Invalid or incomplete multibyte or wide character"
    masked = registry.mask(_tool("rev", doc, locale)).decode("utf-8", "replace")
    if _leaves("\n".join(line[::-1] for line in masked.split("\n")).encode(), secret):
        found.append("rev")
    return found


def _leaves(output: bytes, secret: str) -> bool:
    try:
        assert_no_fragment(output, [secret.encode()], min_fragment=6)
    except AssertionError:
        return True
    return False


needs_tools = pytest.mark.skipif(shutil.which("sed") is None or shutil.which("rev") is None,
                                 reason="sed and rev (util-linux) are needed")


@needs_tools
@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("secret", SECRETS, ids=range(len(SECRETS)))
def test_sed_spaced_and_rev_are_masked(secret: str, locale: str) -> None:
    assert _leaks(_registry(secret), secret, locale) == []


@needs_tools
@pytest.mark.parametrize("locale", LOCALES)
def test_without_the_forms_they_leak(locale: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: the same check with the rearranged forms off finds both leaks for every secret."""
    monkeypatch.setattr(variants, "rearranged_forms", lambda value: [])
    for secret in SECRETS:
        expected = ["sed"] if locale == "C" and not secret.isascii() else ["sed", "rev"]
        assert _leaks(_registry(secret), secret, locale) == expected, secret


def test_forms_by_characters_and_by_bytes() -> None:
    assert rearranged_forms(b"abc1") == [b"a b c 1", b"1cba"]
    value = "äb1".encode()
    assert rearranged_forms(value) == ["ä b 1".encode(), b" ".join(value[i:i + 1] for i in range(len(value))),
                                       "1bä".encode(), value[::-1]]
    assert rearranged_forms(b"abba") == [b"a b b a"]  # a palindrome's reversal is the value itself
    assert rearranged_forms(b"\xff\xfeab") == [b"\xff \xfe a b", b"ba\xfe\xff"]  # not UTF-8: bytes


def test_a_trusted_step_printing_them_shows_nothing() -> None:
    """End to end: a trusted step prints its secret through `sed` and `rev`, and Python's `" ".join`."""
    secret = "Zq8vN3kLp2Xr7TmW9bYc"
    registry = _registry(secret)
    script = (f"printf '%s\\n' \"$S\" | sed 's/./& /g'; printf '%s\\n' \"$S\" | rev; "
              f"{sys.executable} -c 'import os; print(\" \".join(os.environ[\"S\"]))'")
    env = {**os.environ, "S": secret}
    result = run_process(script, registry=registry, env=env, name="leaky")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 3 and all("***" in line for line in lines), result.output
    undone = [lines[0].replace(" ", ""), lines[1][::-1], lines[2].replace(" ", "")]
    assert_no_fragment("\n".join(undone).encode(), [secret.encode()], min_fragment=4)


_VALUE = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_categories=["Cs"]), min_size=8,
                 max_size=40).filter(lambda s: len(set(s)) >= 6)


@settings(max_examples=60, deadline=None)
@given(value=_VALUE, before=st.text("abc xyz=:", max_size=20), data=st.data())
def test_any_value_at_any_split(value: str, before: str, data: st.DataObject) -> None:
    """Spaced and reversed, after any text, in a stream cut anywhere: masked as in the whole output, and nothing of
    the value is left (undone, no 6-character piece of it)."""
    registry = _registry(value)
    spaced = (before + " ".join(value) + " \n").encode()
    reversed_ = (value[::-1] + before + "\n").encode()
    for out, undo in ((spaced, lambda m: m.replace(" ", "")), (reversed_, lambda m: m[::-1])):
        masked = registry.mask(out)
        assert stream_through(registry, data.draw(write_splits(out))) == masked
        assert_no_fragment(undo(masked.decode()).encode(), [value.encode()], min_fragment=6,
                           allowed=[undo(before).encode()])
