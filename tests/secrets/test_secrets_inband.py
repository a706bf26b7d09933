"""::add-mask:: in step output: trusted steps register, untrusted steps are ignored; any write split is safe."""

from __future__ import annotations

import os
import subprocess

from hypothesis import given
from hypothesis import strategies as st
from secrets_testlib import PYTHON, assert_no_fragment, new_secret

from runnerlib.security.inband import AddMaskFilter, unescape_command_data
from runnerlib.security.registry import SecretRegistry
from runnerlib.testing import add_mask_reference


def write_in_pieces(stage: AddMaskFilter, data: bytes, cuts: list[int]) -> None:
    """Write `data` to `stage` in pieces split at `cuts` (out-of-range and repeated cuts ignored), then close."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    start = 0
    for point in [*points, len(data)]:
        stage.write(data[start:point])
        start = point
    stage.close()


def run_through(data: bytes, cuts: list[int], *, trusted: bool, registry: SecretRegistry | None = None):
    """Feed `data` cut at `cuts` through AddMaskFilter -> live MaskedStream; return (output, registry)."""
    registry = registry or SecretRegistry()
    out: list[bytes] = []
    stage = AddMaskFilter(registry, registry.stream(out.append), trusted=trusted, source="test step")
    write_in_pieces(stage, data, cuts)
    return b"".join(out), registry


def test_trusted_registers_and_swallows_the_line():
    value = new_secret()
    data = f"before\n::add-mask::{value}\nthen {value} again\n".encode()
    output, registry = run_through(data, [], trusted=True)
    assert output == b"before\nthen *** again\n"
    assert value.encode() in registry.secrets()


def test_untrusted_is_ignored_and_masked_as_output():
    value = new_secret()
    data = f"::add-mask::{value}\nthen {value}\n".encode()
    output, registry = run_through(data, [], trusted=False)
    assert output == data  # nothing registered, everything passed on
    assert value.encode() not in registry.secrets()
    # ...and if the value is a known secret, the command line itself is masked like any output
    known = SecretRegistry()
    known.add(value, source="job secret")
    output, _ = run_through(data, [], trusted=False, registry=known)
    assert output == b"::add-mask::***\nthen ***\n"


def test_untrusted_cannot_mask_arbitrary_text():
    """An untrusted step must not hide text (e.g. another step's output) by 'registering' it."""
    output, registry = run_through(b"::add-mask::PASSED\nTests PASSED\n", [], trusted=False)
    assert b"Tests PASSED" in output and len(registry) == 0
    # control: from a trusted step the same line does mask
    output, _ = run_through(b"::add-mask::PASSED\nTests PASSED\n", [], trusted=True)
    assert output == b"Tests ***\n"


def test_forms_github_accepts():
    value = new_secret()
    for line in (f"::add-mask::{value}\r\n", f"  ::add-mask::{value}\n", f"\t::ADD-MASK::{value}\n"):
        output, registry = run_through(line.encode() + value.encode(), [], trusted=True)
        assert output == b"***", line
    # escaped multi-line value: %0A is a newline, and both lines are masked
    a, b = new_secret(), new_secret()
    output, registry = run_through(f"::add-mask::{a}%0A{b}\n{a}\nx\n{b}\n".encode(), [], trusted=True)
    assert output == b"***\nx\n***\n"
    assert f"{a}\n{b}".encode() in registry.secrets()


def test_lines_that_only_look_similar_pass_unchanged():
    data = b"::add-mas\n:: add-mask::x\nx::add-mas k::value-1234\n::add-maskvalue\n" + b" " * 100 + b":add-mask::v\n"
    output, registry = run_through(data, [], trusted=True)
    assert output == data and len(registry) == 0


def test_a_command_within_a_line_registers_too():
    """Text printed before the command without a line break (`cat report.txt; echo "::add-mask::$T"`, the report
    an untrusted step wrote with no final newline) must not hide it: GitHub recognises it at a line start only,
    and the later `echo $T` printed the value. The text before it and the line break stay."""
    value = new_secret()
    # The last two end in a piece of the command: the value read is `::add-mask::V` / `add-mask::V`.
    for before in (b"tests: 12 passed", b"x", b" " * 100, b"a ::ADD-MASK::", b"report::add-mask"):
        data = before + f"::add-mask::{value}\nthen {value}\n".encode()
        for cuts in ([], list(range(len(data)))):  # whole, and byte by byte
            output, registry = run_through(data, cuts, trusted=True)
            assert output == before.split(b"::")[0] + b"\nthen ***\n", (before, output)
            assert value.encode() in registry.secrets()
        output, registry = run_through(data, [], trusted=False)  # control: untrusted, nothing registers
        assert value.encode() in output and len(registry) == 0


def test_empty_value_and_unterminated_command():
    output, registry = run_through(b"::add-mask::   \nok\n", [], trusted=True)
    assert output == b"ok\n" and len(registry) == 0
    value = new_secret()
    output, registry = run_through(f"x\n::add-mask::{value}".encode(), [], trusted=True)
    assert output == b"x\n" and value.encode() in registry.secrets()


def test_flush_keeps_a_partial_prefix():
    """Releasing `::add-m` on flush and then receiving `ask::VALUE` would print VALUE: flush must hold it."""
    registry = SecretRegistry()
    out: list[bytes] = []
    stage = AddMaskFilter(registry, registry.stream(out.append), trusted=True)
    value = new_secret()
    stage.write(b"line\n::add-m")
    stage.flush()
    stage.write(f"ask::{value}\n{value}\n".encode())
    stage.close()
    assert b"".join(out) == b"line\n***\n"


def test_over_long_command_is_dropped_not_echoed():
    registry = SecretRegistry()
    out: list[bytes] = []
    stage = AddMaskFilter(registry, out.append, trusted=True, max_command=100)
    stage.write(b"::add-mask::" + b"A" * 150 + b"\nnext\n")
    stage.close()
    assert b"".join(out) == b"next\n" and len(registry) == 0


def test_sink_may_be_a_callable_or_a_stream():
    out: list[bytes] = []
    stage = AddMaskFilter(SecretRegistry(), out.append, trusted=True)
    stage.write(b"plain\n")
    stage.close()
    assert out == [b"plain\n"]


def test_unescape():
    assert unescape_command_data(b"a%0Ab%0d%25%41") == b"a\nb\r%%41"


_plain = st.text(alphabet="ab:-dmsk \n\t%AD0", max_size=40).map(str.encode)


@given(prefix=_plain, suffix=_plain, cuts=st.lists(st.integers(0, 200), max_size=12),
       secret=st.from_regex(r"[A-Za-z0-9]{6,20}", fullmatch=True), crlf=st.booleans())
def test_any_write_split_masks_the_value_after_the_command(prefix, suffix, cuts, secret, crlf):
    """Whatever the cuts, the trusted command registers before the next byte passes: no fragment of the
    value appears after it, and the command line never appears."""
    end = b"\r\n" if crlf else b"\n"
    head = prefix if prefix.endswith(b"\n") or not prefix else prefix + b"\n"
    data = head + b"::add-mask::" + secret.encode() + end + b"x " + secret.encode() + b" y\n" + suffix
    output, registry = run_through(data, cuts, trusted=True)
    assert secret.encode() in registry.secrets()
    tail = output[output.find(b"x ") :] if b"x " in output else output
    assert_no_fragment(tail, secret, size=6)
    assert b"::add-mask::" + secret.encode() not in output


@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=20))
def test_untrusted_is_byte_for_byte_transparent(data, cuts):
    output, registry = run_through(data, cuts, trusted=False)
    assert output == data and len(registry) == 0


@given(lines=st.lists(st.binary(max_size=30).filter(lambda b: b"\n" not in b), max_size=10),
       cuts=st.lists(st.integers(0, 400), max_size=20))
def test_trusted_passes_non_command_lines_unchanged(lines, cuts):
    """Without any command, the filter is the identity whatever the split (nothing lost or reordered)."""
    lines = [line for line in lines if b"::add-mask::" not in line.lower()]
    data = b"\n".join(lines)
    out: list[bytes] = []
    stage = AddMaskFilter(SecretRegistry(), out.append, trusted=True)
    write_in_pieces(stage, data, cuts)
    assert b"".join(out) == data


def test_real_child_process_output():
    """A trusted step (a real process) registers a token in-band and prints it in small pieces."""
    value = new_secret()
    script = (
        "import sys, time\n"
        "v = sys.argv[1]\n"
        "sys.stdout.write('::add-'); sys.stdout.flush()\n"
        "sys.stdout.write('mask::' + v[:5]); sys.stdout.flush()\n"
        "sys.stdout.write(v[5:] + '\\n'); sys.stdout.flush()\n"
        "for ch in 'token=' + v + '\\n': sys.stdout.write(ch); sys.stdout.flush()\n"
    )
    # (the value rides on the child's argv only because this test plays the step itself)
    proc = subprocess.Popen([PYTHON, "-c", script, value], stdout=subprocess.PIPE)
    registry = SecretRegistry()
    out: list[bytes] = []
    stage = AddMaskFilter(registry, registry.stream(out.append), trusted=True)
    assert proc.stdout is not None
    while chunk := os.read(proc.stdout.fileno(), 3):
        stage.write(chunk)
    stage.close()
    proc.wait(60)
    assert b"".join(out) == b"token=***\n"


class RecordingRegistry:
    """Records what is registered, in order (the filter's own behaviour, without masking)."""

    def __init__(self):
        self.values: list[bytes] = []

    def add(self, value, *, source):
        self.values.append(bytes(value))
        return True




reference = add_mask_reference  # the specification, one whole input at a time


_pieces = st.lists(st.sampled_from([b"::add-mask::", b"::ADD-mask::", b"::add-m", b"ask::", b"\n", b"\r\n", b" ",
                                    b"\t", b"value1", b"%0A", b"x", b":", b"::"]), max_size=30).map(b"".join)


@given(data=_pieces, cuts=st.lists(st.integers(0, 400), max_size=25))
def test_streaming_equals_the_whole_input_reference(data, cuts):
    """Differential: any split gives the output and registrations of the line-by-line specification."""
    registry = RecordingRegistry()
    out: list[bytes] = []
    stage = AddMaskFilter(registry, out.append, trusted=True)
    write_in_pieces(stage, data, cuts)
    assert (b"".join(out), registry.values) == reference(data)
