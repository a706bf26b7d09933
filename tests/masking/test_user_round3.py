"""Round 3 of trying masking as a user would (issue 12): what real tools print that still leaked.

Fixed here, each with the protection off (or the previous rule) as a control:
- `od` dumps: `od -Ax`/`od -Ad` offsets were not read as dump lines; a write cut right after the first digits
  of `od`'s next offset ("\\n00") or inside `od -tx1z`'s `>ASCII<` column let the previous line out (streamed
  output differed from the whole output masked).
- decimal byte lists (`print(list(b))`, Rust `{:?}`, Go `fmt.Println([]byte(s))`, JSON arrays) and Python /
  PyYAML escapes of non-ASCII values (`print(subprocess.check_output(...))`, `ascii()`, `yaml.dump`).
- bash's `declare -p` / `export -p`, Python's `shlex.quote`, YAML single quotes and SQL literals (a doubled `'`),
  bash's `$'...'` octal in the C locale.
- numbers in a secrets file (`0x...` keys, `0123` PINs, `12.50`) registered as written, not only as parsed.
- a well-known token right after an ANSI colour code (`\\x1b[32mghp_...`): its left edge read as glued to the
  code's `m`, so nobody's GitHub token printed in colour was not masked.
- `od -c` character dumps (a dump format of the wrapped view, and trigger fragments of the value as od -c
  prints it).
- colour codes inside a registered secret (`grep --color=always` highlighting part of it): the wrapped view
  reads a line with codes without them.

Fixed since, each test with its control: PowerShell's -EncodedCommand (base64 of UTF-16LE,
variants.utf16_base64_forms), a long passphrase folded by `yaml.dump` (security/folded.py), UTF-16, a secret
truncated by strace (security/truncated.py), an unregistered token in base64 (known_formats.BASE64_FORMATS) or
folded across lines (known_formats._TokenFormat._folded), a byte list in a workflow output, base64 in
PHP-escaped JSON, the fields of a JSON document secret (security/json_secret_parts.py).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from runnerlib.security import registry as registry_module
from runnerlib.security import variants
from runnerlib.security.escape_forms import decimal_list_forms, python_escape_forms, quoted_forms
from runnerlib.security.known_formats import KnownFormatsFilter, mask_known_formats
from runnerlib.security.registry import SecretRegistry
from runnerlib.testing import secrets, stream_through, write_splits

TOKEN = b"Xk9fQ2mZ7pLw4RtY8vNb3Hc"  # 23 bytes: crosses a 16-byte dump line at any offset
GH = b"ghp_" + b"Ab3De6Gh9Jk2Mn5Pq8St1Vw4Yz7Bc0Ef3Hi6"
MASK = [sys.executable, "-m", "runnerlib.cli", "mask"]


def registry_of(*values: bytes) -> SecretRegistry:
    r = SecretRegistry()
    assert r.add_many(values, source="test") == len(values)
    return r


def run(cmd: list[str], data: bytes) -> bytes:
    if shutil.which(cmd[0]) is None:
        pytest.skip(f"{cmd[0]} is not installed")
    return subprocess.run(cmd, input=data, capture_output=True, check=True).stdout


def mask_cli(args: list[str], stdin: bytes, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(MASK + args, input=stdin, env={**base, **env}, capture_output=True, timeout=120)


def dump_pieces(secret: bytes, k: int = 4) -> list[bytes]:
    """Pieces of `secret` as a dump shows them on one line: k bytes as spaced hex, or k ASCII-column characters."""
    return [p for i in range(len(secret) - k + 1) for p in (secret[i:i + k].hex(" ").encode(), secret[i:i + k])]


def leaked_dump_pieces(out: bytes, secret: bytes) -> list[int]:
    """Indexes (never the bytes) of the pieces of dump_pieces that `out` shows."""
    return [i for i, p in enumerate(dump_pieces(secret)) if p in out]


def leaked_at(out: bytes, secret: bytes, k: int) -> list[int]:
    """Offsets (never the bytes) of the k-byte pieces of `secret` that `out` shows."""
    return [i for i in range(len(secret) - k + 1) if secret[i:i + k] in out]


@pytest.fixture
def no_wrapped_view(monkeypatch: pytest.MonkeyPatch) -> None:
    """The protection off: no trigger fragments, so the wrapped view never reads a dump."""
    forms = registry_module.secret_forms
    monkeypatch.setattr(registry_module, "secret_forms",
                        lambda value, min_length=4: (forms(value, min_length=min_length)[0], []))


# --- od: offsets other than octal, and streams cut inside a run ------------------------------------------------

OD_ARGS = [["-tx1"], ["-Ad", "-tx1"], ["-Ax", "-tx1"], ["-tx1z"], ["-An", "-tx1z"], ["-A", "x", "-t", "x1z", "-v"],
           ["-tx1", "-w20"]]


@pytest.mark.parametrize("args", OD_ARGS, ids=" ".join)
def test_od_dump_masked_whole_and_at_every_cut(args: list[str]) -> None:
    # 50 bytes before the token: the -Ad offsets reach 48 (not octal), the token crosses a line.
    out = run(["od", *args], b"0123456789" + b"a" * 40 + TOKEN)
    registry = registry_of(TOKEN)
    whole = registry.mask(out)
    assert not leaked_dump_pieces(whole, TOKEN)
    bad = [cut for cut in range(1, len(out)) if stream_through(registry, [out[:cut], out[cut:]]) != whole]
    assert not bad, f"streamed output differs from the whole output masked at cuts {bad[:5]}"


def test_od_dump_cut_after_the_next_offsets_first_digits() -> None:
    # The write ends with "\n00": the start of the next line's offset, which used to read as a byte 00 and end
    # the partial match of the line before, so the first line (6 bytes of the token) went out in clear.
    out = run(["od", "-tx1"], b"0123456789" + TOKEN)
    cut = out.index(b"\n") + 3
    assert out[cut - 3:cut] == b"\n00"
    masked = stream_through(registry_of(TOKEN), [out[:cut], out[cut:]])
    assert not leaked_dump_pieces(masked, TOKEN)


@pytest.mark.parametrize("args", [["-Ax", "-tx1"], ["-tx1z"]], ids=" ".join)
def test_od_dump_leaks_without_the_view(args: list[str], no_wrapped_view: None) -> None:
    out = run(["od", *args], b"0123456789" + b"a" * 40 + TOKEN)
    assert leaked_dump_pieces(registry_of(TOKEN).mask(out), TOKEN)


# --- decimal byte lists and Python / PyYAML escapes ------------------------------------------------------------

PY_PRINTERS = {
    "python list(bytes)": "print(list(s.encode()))",
    "python repr(bytes)": "print(s.encode())",
    "python ascii(str)": "print(ascii(s))",
    "yaml.dump": "import yaml; print(yaml.dump({'password': s}))",
    "json array": "import json; print(json.dumps({'data': list(s.encode())}, separators=(',', ':')))",
    "go []byte": "print('[' + ' '.join(map(str, s.encode())) + ']')",
    "shlex.join": "import shlex; print(shlex.join(['mysql', '-p' + s]))",
    "bash declare -p": "import subprocess; subprocess.run(['bash', '-c', 'declare -p S'])",
    "yaml.dump single-quoted": "import yaml; print(yaml.dump({'password': '#' + s}))",
    "bash export -p": "import subprocess; subprocess.run(['bash', '-c', 'export -p | grep \" S=\"'])",
}
NON_ASCII = "Pässwörd-Grüße-42"
SHELLISH = "Pa$$w0rd'x\"y`z\\-42"  # what bash escapes inside double quotes, and a single quote


@pytest.mark.parametrize("name", list(PY_PRINTERS))
@pytest.mark.parametrize("value", [TOKEN.decode(), NON_ASCII, "it's \"quoted\"\t-42", SHELLISH])
def test_program_prints_of_a_value_are_masked(name: str, value: str) -> None:
    out = subprocess.run([sys.executable, "-c", "import os; s = os.environ['S']; " + PY_PRINTERS[name]],
                         env={**os.environ, "S": value}, capture_output=True, check=True).stdout
    registry = registry_of(value.encode())
    masked = registry.mask(out)
    assert b"***" in masked
    assert stream_through(registry, [out[i:i + 3] for i in range(0, len(out), 3)]) == masked
    for form in [*decimal_list_forms(value.encode()), *python_escape_forms(value.encode()),
                 *quoted_forms(value.encode()), value.encode()]:
        for i in range(0, len(form) - 8):
            assert form[i:i + 9] not in masked, f"a piece of the {name} form survived"


@pytest.mark.parametrize(("name", "value"), [("python list(bytes)", NON_ASCII), ("python repr(bytes)", NON_ASCII),
                                             ("yaml.dump", NON_ASCII), ("bash declare -p", SHELLISH),
                                             ("shlex.join", SHELLISH), ("yaml.dump single-quoted", SHELLISH)])
def test_program_prints_leaked_with_the_previous_forms(name: str, value: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for new in ("decimal_list_forms", "python_escape_forms", "quoted_forms"):
        monkeypatch.setattr(variants, new, lambda value: [])
    out = subprocess.run([sys.executable, "-c", "import os; s = os.environ['S']; " + PY_PRINTERS[name]],
                         env={**os.environ, "S": value}, capture_output=True, check=True).stdout
    assert b"***" not in registry_of(value.encode()).mask(out)  # nothing masked: the value is there to read


def _print_forms(value: bytes) -> list[bytes]:
    forms = [str(list(value)).encode(), ("[" + " ".join(map(str, value)) + "]").encode(),
             json.dumps(list(value), separators=(",", ":")).encode(), repr(value).encode()]
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return forms
    # YAML's own escapes of control characters (`\0`, `\e`, `\N`) are not forms: printable values only.
    yaml_form = [yaml.dump(text, width=10**6).encode("utf-8", "surrogatepass")] if text.isprintable() else []
    return [*forms, ascii(text).encode(), repr(text).encode("utf-8", "surrogatepass"), *yaml_form,
            shlex.quote(text).encode("utf-8", "surrogatepass"), b"'" + value.replace(b"'", b"''") + b"'", b'"' + re.sub(rb'([$"`\\])', rb"\\\1", value) + b'"']


@given(st.data())
def test_print_forms_at_any_offset_and_split(data: st.DataObject) -> None:
    value = data.draw(secrets(min_length=4, max_length=16))
    filler = next(bytes([b]) for b in b"#%~|0" if b not in value)
    registry = registry_of(value)
    for form in _print_forms(value):
        text = filler * data.draw(st.integers(0, 20)) + form + filler * data.draw(st.integers(0, 20))
        whole = registry.mask(text)
        assert stream_through(registry, data.draw(write_splits(text))) == whole
        assert form not in whole, "a printed form survived whole"
        # Every 4-byte window of the value, printed the same way, is gone.
        for i in range(len(value) - 3):
            for piece in (b", ".join(b"%d" % b for b in value[i:i + 4]), b" ".join(b"%d" % b for b in value[i:i + 4]),
                          b",".join(b"%d" % b for b in value[i:i + 4])):
                assert piece not in whole


# --- well-known formats after a colour code --------------------------------------------------------------------

COLOURS = [b"\x1b[32m", b"\x1b[1;38;5;208m", b"\x1b[01;31m\x1b[K", b"\x1b[m"]
_OLD_EDGE = re.compile(rb"(?<![A-Za-z0-9_])gh[pousr]_[A-Za-z0-9]{36,251}")


@pytest.mark.parametrize("colour", COLOURS)
@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense-prefixes"])
def test_known_token_after_a_colour_code_is_masked(colour: bytes, dense: bool) -> None:
    spam = b"ghp_ AKIA " * 100 if dense else b""  # past 64 prefixes a write takes the viable prefilter
    data = spam + b"token: " + colour + GH + b"\x1b[0m\n"
    out, names = mask_known_formats(data)
    assert GH[4:] not in out and names == ["GitHub token"]
    chunks: list[bytes] = []
    stage = KnownFormatsFilter(chunks.append)
    for i in range(0, len(data), 5):
        stage.write(data[i:i + 5])
    stage.close()
    assert not leaked_at(b"".join(chunks), GH, 8)
    # Control: the previous left-edge rule read the code's `m` (or `K`) as a word glued to the token.
    assert _OLD_EDGE.search(data) is None


def test_glued_word_is_still_not_a_token() -> None:
    out, names = mask_known_formats(b"x" + GH + b"\n")
    assert out == b"x" + GH + b"\n" and names == []


def test_coloured_token_through_the_mask_command() -> None:
    text = b"\x1b[32m" + GH + b"\x1b[0m\n"
    on = mask_cli([], text, {})
    assert on.returncode == 0 and GH[4:] not in on.stdout + on.stderr and b"GitHub token" in on.stderr
    off = mask_cli(["--no-known-formats"], text, {})  # control: the same bytes, the stage off
    assert off.stdout == text


# --- od -c character dumps, each with the trigger fragments off as control ------------------------------------

OD_C_ARGS = [["-c"], ["-An", "-c"], ["-Ax", "-c"], ["-c", "-w32"], ["-c", "-w8"]]


def od_c_chars(out: bytes) -> bytes:
    """The printable characters of an `od -c` dump, joined (what a reader sees of the value)."""
    return b"".join(re.findall(rb"   ([!-~])", out))


@pytest.mark.parametrize("args", OD_C_ARGS, ids=" ".join)
@pytest.mark.parametrize("before", [b"", b"0123456789", b"\t\n\x01"], ids=["at-0", "at-10", "escapes"])
def test_od_c_character_dump_at_every_cut(args: list[str], before: bytes) -> None:
    out = run(["od", *args], before + TOKEN)
    registry = registry_of(TOKEN)
    whole = registry.mask(out)
    assert not leaked_at(od_c_chars(whole), TOKEN, 4)
    bad = [cut for cut in range(1, len(out)) if stream_through(registry, [out[:cut], out[cut:]]) != whole]
    assert not bad, f"streamed output differs from the whole output masked at cuts {bad[:5]}"


@pytest.mark.parametrize("args", [["-An", "-c"], ["-An", "-c", "-w8"]], ids=" ".join)
@pytest.mark.parametrize("before", [b"the key is: ", b"a b "], ids=["words", "spaced"])
def test_od_c_without_offsets_of_text_with_spaces_at_every_cut(args: list[str], before: bytes) -> None:
    """A space byte prints as a field of 4 blanks: `   k   e   y       i   s`. The test of whether a stream's
    last line may be a dump line did not read such a line without offsets, so a write cut inside it released its
    end unheld and the next write read the rest as a line of unknown start: the value leaked whole."""
    for value in (TOKEN, b"Xk9f Q2mL p0Rt Z7vW"):
        out = run(["od", *args], before + value)
        registry = registry_of(value)
        whole = registry.mask(out)
        assert not leaked_at(od_c_chars(whole), value.replace(b" ", b""), 4)
        bad = [cut for cut in range(1, len(out)) if stream_through(registry, [out[:cut], out[cut:]]) != whole]
        assert not bad, f"streamed output differs from the whole output masked at cuts {bad[:5]}"


@pytest.mark.parametrize("args", [["-c"], ["-An", "-c"]], ids=" ".join)
def test_od_c_leaks_without_the_view(args: list[str], no_wrapped_view: None) -> None:
    out = run(["od", *args], b"0123456789" + TOKEN)
    assert leaked_at(od_c_chars(registry_of(TOKEN).mask(out)), TOKEN, 4)


@given(st.data())
def test_od_c_of_any_value_at_any_offset_and_split(data: st.DataObject) -> None:
    if shutil.which("od") is None:
        pytest.skip("od is not installed")
    value = data.draw(secrets(min_length=7, max_length=24))
    before = data.draw(st.binary(max_size=20))
    width = data.draw(st.sampled_from([16, 24, 32]))
    offsets = data.draw(st.sampled_from([[], ["-An"]]))
    out = subprocess.run(["od", *offsets, "-c", f"-w{width}"], input=before + value + b"#" * 3, capture_output=True,
                         check=True).stdout
    registry = registry_of(value)
    whole = registry.mask(out)
    assert stream_through(registry, data.draw(write_splits(out))) == whole
    from runnerlib.security.wrapped import od_c_form

    # No 4 bytes of the value as od -c prints them survive on one line.
    flat = whole.replace(b"\n", b" ")
    for i in range(len(value) - 3):
        piece = od_c_form(value[i:i + 4])
        if len(piece.strip(b" ")) < 7:  # mostly spaces: a space byte prints as 4 of them
            continue
        assert piece not in flat or piece in od_c_form(before + b"#" * 3), "a piece of the value survived"


SGR = [b"\x1b[31m", b"\x1b[0m", b"\x1b[01;31m\x1b[K", b"\x1b[m\x1b[K", b"\x1b[1;38;5;208m"]


def grep_color(line: bytes, pattern: bytes) -> bytes:
    """What `grep --color=always PATTERN` prints for `line` (real grep when installed)."""
    if shutil.which("grep"):
        return subprocess.run(["grep", "--color=always", pattern], input=line, capture_output=True,
                              check=True).stdout
    return line.replace(pattern, b"\x1b[01;31m\x1b[K" + pattern + b"\x1b[m\x1b[K")


def test_colour_code_inside_a_registered_secret() -> None:
    registry = registry_of(TOKEN)
    out = grep_color(b"TOKEN=" + TOKEN + b"\n", TOKEN[3:9])  # grep highlighting part of the token
    assert b"\x1b[" in out
    masked = registry.mask(out)
    assert not leaked_at(_SGR_STRIP.sub(b"", masked), TOKEN, 4)
    assert all(stream_through(registry, [out[:c], out[c:]]) == masked for c in range(1, len(out)))


def test_colour_code_inside_a_secret_leaks_without_the_view(no_wrapped_view: None) -> None:
    out = grep_color(b"TOKEN=" + TOKEN + b"\n", TOKEN[3:9])
    assert leaked_at(_SGR_STRIP.sub(b"", registry_of(TOKEN).mask(out)), TOKEN, 4)


_SGR_STRIP = re.compile(rb"\x1b\[[0-9;]*[mK]")


@given(st.data())
def test_colour_codes_anywhere_in_a_secret_at_any_split(data: st.DataObject) -> None:
    value = data.draw(secrets(alphabet=bytes(range(0x21, 0x7F)), min_length=15, max_length=40))
    cuts = sorted(data.draw(st.lists(st.integers(1, len(value) - 1), max_size=3, unique=True)))
    pieces = [value[a:b] for a, b in zip([0, *cuts], [*cuts, len(value)], strict=True)]
    # One piece of 8 bytes or more stays whole: the trigger fragment the view needs (15+ bytes, a split of two).
    if max(len(p) for p in pieces) < 8 or len(pieces) > 2 and max(len(p) for p in pieces) < 16:
        return
    codes = [data.draw(st.sampled_from(SGR)) for _ in pieces[1:]]
    line = b"x: " + pieces[0] + b"".join(c + p for c, p in zip(codes, pieces[1:], strict=True)) + b" end\n"
    registry = registry_of(value)
    whole = registry.mask(line)
    assert not leaked_at(_SGR_STRIP.sub(b"", whole), value, 4)
    assert stream_through(registry, data.draw(write_splits(line + b"next\n"))) == registry.mask(line + b"next\n")


@pytest.mark.parametrize("how", ["iconv -t utf-16le", "pwsh -EncodedCommand (base64 of UTF-16LE)"])
def test_utf16_forms(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """UTF-16 (Windows tools, PowerShell's -EncodedCommand: a command line in UTF-16LE, base64-encoded): the
    forms with NUL bytes go to the side matcher, scanned where the output holds a NUL; the base64 of the
    little-endian form at each alignment is three more literals (variants.utf16_base64_forms)."""
    def shown(registry: SecretRegistry) -> bytes:
        wide = run(["iconv", "-f", "utf-8", "-t", "utf-16le"], TOKEN)
        for prefix in (b"", b"e\0", b"ec\0"):  # the secret at each alignment of the command's base64
            command = prefix + "echo ".encode("utf-16-le") + wide
            out = registry.mask(wide if how.startswith("iconv") else base64.b64encode(command))
            if not how.startswith("iconv") and b"*" not in out:
                return base64.b64decode(out)
            if b"*" not in out:
                return out
        return b""

    registry = registry_of(TOKEN)
    assert registry.mask(base64.b64encode(TOKEN)) == b"***"  # control: base64 of UTF-8 is masked
    assert not leaked_at(shown(registry).replace(b"\0", b""), TOKEN, 6)
    assert registry.mask(b"x" + TOKEN.decode().encode("utf-16-be") + b"!y") == b"x***!y"  # big-endian
    # Control: without the forms it leaks (utf16_base64_forms encodes utf16_forms' first one).
    monkeypatch.setattr(variants, "utf16_forms", lambda value: [])
    assert leaked_at(shown(registry_of(TOKEN)).replace(b"\0", b""), TOKEN, 6)


@given(st.data())
def test_powershell_encoded_command_at_any_offset_and_split(data: st.DataObject) -> None:
    """Property: a text secret inside a UTF-16LE command line, base64-encoded as PowerShell's -EncodedCommand
    takes it, after any text and written in any pieces: no 4-character piece of the secret shows in what the
    masked output decodes to, and the stream gives the whole buffer's answer."""
    secret = data.draw(st.text(st.characters(min_codepoint=33, max_codepoint=0x24F), min_size=4, max_size=24))
    before, after = data.draw(st.text(max_size=20)), data.draw(st.text(max_size=20))
    encoded = base64.b64encode((before + secret + after).encode("utf-16-le"))
    text = b"powershell -NoProfile -EncodedCommand " + encoded + b"\n"
    registry = registry_of(secret.encode())
    whole = registry.mask(text)
    shown = whole.split(b" ")[-1].strip()
    # What a reader decodes: each run of base64 between the masks, at whichever alignment it starts.
    for run in re.findall(rb"[A-Za-z0-9+/]{4,}", shown):
        for skip in range(4):
            piece = run[skip:][:len(run[skip:]) // 4 * 4]
            decoded = base64.b64decode(piece) if piece else b""
            for odd in (decoded, decoded[1:]):
                clear = odd.decode("utf-16-le", "replace")
                assert not [i for i in range(len(secret) - 3) if secret[i:i + 4] in clear]
    assert stream_through(registry, data.draw(write_splits(text, max_writes=8))) == whole


@given(st.data())
def test_utf16_forms_at_any_offset_and_split(data: st.DataObject) -> None:
    """Property: a text secret in UTF-16 (either byte order), at any offset, written in any pieces: the stream
    gives the whole buffer's answer and no 4-character piece shows."""
    secret = data.draw(st.text(st.characters(min_codepoint=33, max_codepoint=0x24F), min_size=6, max_size=24))
    registry = registry_of(secret.encode())
    how = data.draw(st.sampled_from(["utf-16-le", "utf-16-be"]))
    before, after = data.draw(st.text(max_size=12)), data.draw(st.text(max_size=12))
    text = (before + secret + after).encode(how) + b"\n"
    whole = shown = registry.mask(text)
    for i in range(len(secret) - 3):
        piece = secret[i:i + 4]
        assert piece.encode("utf-16-le") not in shown and piece.encode("utf-16-be") not in shown
    assert stream_through(registry, data.draw(write_splits(text, max_writes=8))) == whole


def test_unregistered_token_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token nobody registered, base64-encoded (`kubectl get secret -o yaml`, docker's config): the known
    formats are also looked for in base64 (known_formats.BASE64_FORMATS)."""
    assert GH not in mask_known_formats(b"token: " + GH + b"\n")[0]  # control: in clear it is masked
    data = b"data:\n  token: " + base64.b64encode(GH) + b"\n"
    out = mask_known_formats(data)[0]
    seen = base64.b64decode(out.split(b": ")[-1]) if b"*" not in out else out
    assert not leaked_at(seen, GH, 12)
    import runnerlib.security.known_formats as kf  # control: the same stage without the base64 formats

    monkeypatch.setattr(kf, "_STARTS", [tuple(f for f in fs if f not in kf.BASE64_FORMATS) for fs in kf._STARTS])
    assert base64.b64encode(GH) in mask_known_formats(data)[0]


@pytest.mark.parametrize("width", [12, 20, 33])
@pytest.mark.parametrize("before", [b"", b"token: "])
def test_unregistered_token_folded(width: int, before: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """`fold -w 20` (or a narrow column) cut a token nobody registered: the known formats read a token whose line
    ends too early for it across the line breaks (known_formats._TokenFormat._folded). Not when the fold cuts the
    prefix itself (`gh` / `p_...`): a limit in docs/masking.md."""
    data = run(["fold", "-w", str(width)], before + GH + b"\nDone.\n")
    out = mask_known_formats(data)[0]
    assert not leaked_at(out.replace(b"\n", b""), GH[4:], 6)
    if len(before + GH) % width:
        assert out.endswith(b"***\nDone.\n")  # the line after the token is its own
    else:  # the token ended a full line: the next line's first word reads as its continuation
        assert out.endswith(b"***.\n")
    import runnerlib.security.known_formats as kf  # control: without the folded reading it leaks

    monkeypatch.setattr(kf._TokenFormat, "_folded", lambda *a: (kf._NONE, 0, 0))
    assert leaked_at(mask_known_formats(data)[0].replace(b"\n", b""), GH[4:], 6)


def test_long_passphrase_folded_by_yaml_dump() -> None:
    phrase = " ".join(["correct horse battery staple"] * 4)
    registry = registry_of(phrase.encode())
    assert registry.mask(yaml.dump({"p": phrase}, width=10**6).encode()) == b"p: ***\n"  # control: unfolded
    out = registry.mask(yaml.dump({"p": phrase}).encode())
    assert not leaked_at(re.sub(rb"\s+", b" ", out), phrase.encode(), 12)


SA_KEY_ID = "4f2a9c1e7b3d5f6a8c0e2b4d6f8a1c3e5b7d9f0a"
SERVICE_ACCOUNT = json.dumps({
    "type": "service_account", "project_id": "my-proj-1234", "private_key_id": SA_KEY_ID,
    "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
                   "-----END PRIVATE KEY-----\n",
    "client_email": "ci-bot@my-proj-1234.iam.gserviceaccount.com"}, separators=(",", ":"))


@pytest.mark.parametrize("printed", ["jq .", "jq -r .private_key_id"])
def test_json_document_secret_reformatted(printed: str) -> None:
    registry = registry_of(SERVICE_ACCOUNT.encode())
    assert registry.mask(SERVICE_ACCOUNT.encode() + b"\n") == b"***\n"  # control: printed as registered
    doc = json.loads(SERVICE_ACCOUNT)
    out = json.dumps(doc, indent=2) if printed == "jq ." else doc["private_key_id"]
    assert not leaked_at(registry.mask(out.encode()), SA_KEY_ID.encode(), 8)
    pem_line = doc["private_key"].splitlines()[1].encode()  # `jq -r .private_key`: the PEM's own lines
    assert pem_line not in registry.mask(doc["private_key"].encode())
    assert b"my-proj-1234" in registry.mask(out.encode() + b" my-proj-1234")  # identifiers stay readable


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=30),
                    lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=12), children, max_size=4), max_leaves=20))
def test_json_secret_parts_are_string_fields_of_the_document(document) -> None:  # noqa: ANN001
    """Any JSON value: secret_parts never fails, and returns only string leaves of an object document, each
    under a secret-like name or spanning lines."""
    from runnerlib.security.json_secret_parts import secret_parts

    raw = json.dumps(document).encode()
    parts = secret_parts(raw)
    if not isinstance(document, dict):
        assert parts == []
    leaves = set()

    def walk(node, name=""):  # noqa: ANN001, ANN202
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, name)
        elif isinstance(node, str):
            leaves.add(node.encode("utf-8", "surrogateescape"))

    walk(document)
    assert set(parts) <= leaves


# --- numbers in a secrets file keep the text the user wrote ----------------------------------------------------

ETH_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"  # YAML: an int
NUMBERS_YAML = f"DEPLOYER_PRIVATE_KEY: {ETH_KEY}\nPIN: 0123456\nACCOUNT: 1_234_567_890\nRATE: 12.50\n"
NUMBERS_PRINTED = f"key={ETH_KEY} pin=0123456 acct=1_234_567_890 rate=12.50\n".encode()


def _masked_by_document(text: str, printed: bytes) -> bytes:
    from runnerlib.security.secret_sources import parse_secrets_document

    registry = SecretRegistry()
    registry.add_many([v for _n, v in parse_secrets_document(text, "test")], source="test")
    return registry.mask(printed)


def test_yaml_numbers_are_masked_as_written(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "secrets.yaml"  # type: ignore[operator]
    path.write_text(NUMBERS_YAML)
    p = mask_cli(["--secrets-file", str(path)], NUMBERS_PRINTED, {})
    assert p.returncode == 0 and p.stdout == b"key=*** pin=*** acct=*** rate=***\n"
    # The parsed spellings stay masked too (a tool that loads the YAML itself prints 12.5, 42798).
    assert _masked_by_document(NUMBERS_YAML, b"12.5 42798") == b"*** ***"


def test_json_numbers_are_masked_as_written() -> None:
    assert _masked_by_document('{"a": 1.50, "b": 31e10, "c": 48151623}', b"1.50 31e10 48151623 310000000000.0") == \
        b"*** *** *** ***"


def test_yaml_numbers_leaked_when_only_the_parsed_number_was_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    from runnerlib.security import secret_sources

    monkeypatch.setattr(secret_sources, "keep_yaml_number_text", lambda loader: None)
    out = _masked_by_document(NUMBERS_YAML, NUMBERS_PRINTED)
    assert ETH_KEY.encode() in out and b"pin=0123456" in out


@given(st.from_regex(r"[-+]?(0x[0-9a-fA-F_]{1,20}|0[0-7_]{1,12}|[1-9][0-9_]{0,12}(\.[0-9_]{0,6})?"
                     r"([eE][-+]?[0-9]{1,3})?|[0-9]{1,3}(:[0-5][0-9]){1,3})", fullmatch=True))
def test_any_yaml_number_is_registered_as_written(text: str) -> None:
    from runnerlib.security.secret_sources import SecretsDocumentError, parse_secrets_document

    try:
        values = [v for _n, v in parse_secrets_document(f"K: {text}\n", "test")]
    except SecretsDocumentError:
        return  # refused whole (a date-like value): nothing half-registered
    assert text in values


def test_secret_truncated_by_strace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tools that cut long values print a beginning of a secret and a marker: strace -s 32 (`"Xk9f..."...`).
    A beginning of at least truncated.HEAD bytes followed by `...` is masked (security/truncated.py)."""
    long_token = TOKEN + TOKEN[::-1]  # 46 bytes
    registry = registry_of(long_token)
    line = b'write(1, "' + long_token + b'\\n", 47) = 47\n'
    assert registry.mask(line) == b'write(1, "***\\n", 47) = 47\n'  # control: untruncated (strace -s 100)
    out = b""
    if shutil.which("strace"):  # ptrace may be refused (an unprivileged uid in a container): then as it prints
        traced = subprocess.run(["strace", "-e", "trace=write", "-o", "/dev/stderr", "printf", "%s\\n",
                                 long_token.decode()], capture_output=True).stderr
        out = b"".join(ln + b"\n" for ln in traced.splitlines() if ln.startswith(b"write(1"))
    out = out or b'write(1, "' + long_token[:32] + b'"..., 47) = 47\n'
    assert b'"...' in out
    assert not leaked_at(registry.mask(out), long_token, 12)


def test_set_output_of_a_byte_list(tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret held as a list of byte values (Node's Buffer.toJSON, Python's list(b)) has no string to mask: the
    list is read as the bytes it holds, and every item of one that holds a secret becomes \"***\"."""
    from runnerlib.workflow import api

    out = tmp_path / "out.json"  # type: ignore[operator]
    ctx = api.workflow_context(environ={"REACTORCIDE_WORKFLOW_OUTPUT": str(out), "API_TOKEN": TOKEN.decode()})
    ctx.set_output("as_text", TOKEN.decode())
    assert json.loads(out.read_text())["outputs"]["as_text"] == "***"  # control: the string is masked
    ctx.set_output("buf", {"type": "Buffer", "data": list(b"x=" + TOKEN + b"\xff")})  # Node's Buffer.toJSON
    ctx.set_output("list", list(TOKEN))  # Python's list(b)
    ctx.set_output("plain", [1, 2, 3, 200, 7])  # control: a list of small numbers holding no secret stays
    outputs = json.loads(out.read_text())["outputs"]
    for data in (outputs["buf"]["data"], outputs["list"]):
        held = bytes(b for b in data if isinstance(b, int))
        assert not leaked_at(held, TOKEN, 4) and set(data) == {"***"}
    assert outputs["plain"] == [1, 2, 3, 200, 7]
    monkeypatch.setattr(api, "BYTE_LIST_MIN", 10 ** 6)  # control: byte lists not read as bytes
    ctx.set_output("list", list(TOKEN))
    assert bytes(json.loads(out.read_text())["outputs"]["list"]) == TOKEN


@given(before=st.lists(st.integers(0, 255), max_size=40), after=st.lists(st.integers(0, 255), max_size=40),
       other=st.lists(st.integers(0, 255), min_size=4, max_size=40), nest=st.integers(0, 2))
def test_byte_lists_holding_a_secret_are_masked_anywhere(before: list[int], after: list[int], other: list[int],
                                                          nest: int) -> None:
    """Property: a list of byte values holding a secret at any offset, at any depth of the payload, gets no byte of
    it out; a byte list without one comes back as it was."""
    from runnerlib.workflow import api

    registry = registry_of(TOKEN)
    held = before + list(TOKEN) + after
    payload: object = {"data": held, "other": other}
    for _ in range(nest):
        payload = [payload, {"k": payload}]
    out = json.dumps(api.mask_payload(payload, {}, registry))
    assert not leaked_at(bytes(int(n) for n in re.findall(r"\d+", out) if int(n) < 256), TOKEN, 8)
    if TOKEN not in bytes(other):
        assert json.dumps(other) in out


def test_base64_inside_php_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """An encoding of an encoding: PHP's json_encode (and Java's org.json) write `/` as `\\/`, so the base64 of a
    secret holding a `/` (docker's auth, a Basic header in a PHP app's config dump) has its `\\/` twin."""
    value = b"user:pa??w0rd>>~~1234"  # its base64 holds a `/`
    registry = registry_of(value)
    b64 = base64.b64encode(value)
    assert b"/" in b64 and registry.mask(json.dumps({"auth": b64.decode()}).encode()) == b'{"auth": "***"}'
    php = json.dumps({"auth": b64.decode()}).replace("/", "\\/").encode()
    assert registry.mask(php) == b'{"auth": "***"}'  # control above: the same document without PHP's escaping
    for offset in range(3):  # inside a longer encoded document, at each alignment
        core = variants.base64_forms(value)[1 + (offset + 5) % 3]
        doc = base64.b64encode(b"x" * offset + b"auth " + value + b" end").decode()
        php_doc = json.dumps({"blob": doc}).replace("/", "\\/").encode()
        assert core.replace(b"/", b"\\/") in php_doc and core.replace(b"/", b"\\/") not in registry.mask(php_doc)
    real = variants.encoded_forms  # control: the same forms without the twins
    monkeypatch.setattr(variants, "encoded_forms", lambda *a, **k: [f for f in real(*a, **k) if b"\\/" not in f])
    assert b"***" not in registry_of(value).mask(php)


@pytest.mark.parametrize("script", ['printf "%q\\n" "$S"', "declare -p S", 'bash -xc ": \\"\\$S\\"" 2>&1'])
def test_bash_in_the_c_locale_prints_non_ascii_in_octal(script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    out = subprocess.run(["bash", "-c", script], env={"PATH": os.environ["PATH"], "LC_ALL": "C", "S": NON_ASCII},
                         capture_output=True, check=True).stdout
    assert b"$'P\\303\\244" in out
    assert b"$'***'" in registry_of(NON_ASCII.encode()).mask(out)
    monkeypatch.setattr(variants, "c_locale_shell_forms", lambda value: [])  # control: the previous forms
    assert b"***" not in registry_of(NON_ASCII.encode()).mask(out)


def test_od_c_hex_is_read_two_digits_a_byte() -> None:
    """Hypothesis found it: `od -c` of a space then seven NUL bytes. The hex made of the dump ("20" then "00"s)
    holds the secret's hex one digit early, which covered the space's field in the whole output but not in a
    stream cut after that field. A match between a byte's two digits is now no match (od -c prints no hex)."""
    if shutil.which("od") is None:
        pytest.skip("od is not installed")
    value = b"\0" * 7
    out = subprocess.run(["od", "-c", "-w16"], input=b" " + value + b"###", capture_output=True, check=True).stdout
    registry = registry_of(value)
    whole = registry.mask(out)
    assert whole.startswith(b"0000000      ***") and stream_through(registry, [out[:11], out[11:]]) == whole


@given(value=st.binary(min_size=7, max_size=90), cut=st.integers(0, 400), width=st.integers(61, 130),
       offset=st.integers(0, 130))
def test_od_c_fragments_survive_any_line_breaks(value: bytes, cut: int, width: int, offset: int) -> None:
    """The od -c triggers (aligned on the dump's characters) are sound as fragments() is: one break anywhere,
    or lines of any width od -c could print (61 and more) at any offset, leave a whole fragment in a piece."""
    from runnerlib.security.wrapped import od_c_form, od_c_fragments

    form = od_c_form(value)
    frags = od_c_fragments(value)
    if not frags:
        return  # too short to trigger on soundly (fragments() says the same)
    one_break = [form[:cut % (len(form) + 1)], form[cut % (len(form) + 1):]]
    start = offset % width
    lines = [form[:start]] + [form[i:i + width] for i in range(start, len(form), width)]
    for pieces in (one_break, lines):
        assert any(f in piece for f in frags for piece in pieces), (form, pieces, frags)


# --- found in a later look: registered values folded by a tool (security/folded.py BreakSet, wrapped.py) ----------

LONG_TOKEN = "Xk9fQ2mZ7pLw4RtY8vNb3HcQ2mZ7pLw4RtY8vNb3"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5"
       "MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")


def test_a_registered_token_folded_from_the_start_of_a_line() -> None:
    """Control for the two below: a registered token of the encoding alphabet, folded from column 0 (`fold -w
    20` of the bare token), is joined by the wrapped view (its raw fragments are triggers) and masked."""
    out = run(["fold", "-w", "20"], LONG_TOKEN.encode() + b"\nnext\n")
    assert registry_of(LONG_TOKEN.encode()).mask(out) == b"***\nnext\n"


@pytest.mark.parametrize("width", [16, 20, 33])
@pytest.mark.parametrize("before", [b"token: ", b'{"key": "', b"| "])
def test_a_registered_token_folded_after_a_prefix(width: int, before: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """`fold -w 20` of `token: <token>` (a narrow column, a tool wrapping long lines): the wrapped view joins only
    lines made wholly of encoding characters, so this leaked whole; folded.BreakSet reads the value's lines with
    each break as nothing at a hit of its raw fragments. Control: without it, it leaks."""
    from runnerlib.security import folded

    out = run(["fold", "-w", str(width)], before + LONG_TOKEN.encode() + b"\nnext\n")
    registry = registry_of(LONG_TOKEN.encode())
    whole = registry.mask(out)
    assert not leaked_at(whole.replace(b"\n", b""), LONG_TOKEN.encode(), 8)
    assert whole.endswith(b"***\nnext\n")
    assert all(stream_through(registry, [out[:c], out[c:]]) == whole for c in range(1, len(out)))
    monkeypatch.setattr(folded.BreakSet, "occurrences", lambda *args: [])
    assert leaked_at(registry_of(LONG_TOKEN.encode()).mask(out).replace(b"\n", b""), LONG_TOKEN.encode(), 8)


def test_a_registered_jwt_folded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A JWT (OIDC and service-account tokens) folded at any width: `.` is an encoding character of the wrapped
    view, so its lines are joined (its raw fragments are the triggers). Control: without `.` it leaked whole."""
    from runnerlib.security import wrapped

    registry = registry_of(JWT.encode())
    for width in (20, 64, 76):
        out = run(["fold", "-w", str(width)], JWT.encode() + b"\n")
        assert not leaked_at(registry.mask(out).replace(b"\n", b""), JWT.encode(), 12)
    from runnerlib.security import folded

    monkeypatch.setattr(folded.BreakSet, "occurrences", lambda *args: [])  # the other way it is found
    for name in ("_LINE", "_QUICK", "_PREFIX"):  # the alphabet before
        rx = getattr(wrapped, name)
        monkeypatch.setattr(wrapped, name, re.compile(rx.pattern.replace(rb"[A-Za-z0-9+/_=.-]", rb"[A-Za-z0-9+/_=-]")))
    out = run(["fold", "-w", "64"], JWT.encode() + b"\n")
    assert leaked_at(registry_of(JWT.encode()).mask(out).replace(b"\n", b""), JWT.encode(), 12)


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_a_dotted_token_folded_at_any_width_and_split(data: st.DataObject) -> None:
    """Property: a registered value of the encoding alphabet with dots (a JWT's shape), folded from column 0 at
    any width from 16, written in any pieces: no 12-byte piece shows and the stream gives the whole's answer."""
    parts = data.draw(st.lists(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
                                       min_size=8, max_size=40), min_size=2, max_size=3))
    value = ".".join(parts).encode()
    width = data.draw(st.integers(16, 80))
    text = b"".join(value[i:i + width] + b"\n" for i in range(0, len(value), width)) + b"done\n"
    registry = registry_of(value)
    whole = registry.mask(text)
    assert not leaked_at(whole.replace(b"\n", b""), value, 12)
    assert stream_through(registry, data.draw(write_splits(text, max_writes=8))) == whole
