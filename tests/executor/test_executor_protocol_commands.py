"""Workflow commands in step output (::group::, ::error::, ::stop-commands:: ...): the stage in front of
::add-mask::, its markers, the annotations it collects (masked), and its independence from how output is cut."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runnerlib.execution.workflow_commands import WorkflowCommands, parse_command
from runnerlib.security.inband import AddMaskFilter
from runnerlib.security.registry import SecretRegistry

SECRET = "wc-secret-Zq81kPw"


class Sink:
    def __init__(self) -> None:
        self.data = b""
        self.suspended = False
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True


def run(pieces: list[bytes], *, debug: bool = False, mask=lambda t: t) -> tuple[bytes, WorkflowCommands]:  # noqa: ANN001
    commands = WorkflowCommands(mask, debug=debug)
    sink = Sink()
    stage = commands.filter(sink)
    for piece in pieces:
        stage.write(piece)
    stage.close()
    assert sink.closed
    return sink.data, commands


def test_markers_and_annotations() -> None:
    out, commands = run([b"start\n::group::Build %25 all\ninside\n::endgroup::\n"
                         b"::error file=src/a.py,line=3,col=7,endLine=4,endColumn=2,title=Type%3A error::bad%0Athing\n"
                         b"  ::warning::indented\n::notice title=N::fyi\n::debug::hidden\nstd::vector<int>\n"])
    assert out.decode().splitlines() == [
        "start", "##[group]Build % all", "inside", "##[endgroup]",
        "##[error]src/a.py:3:7: Type: error: bad", "##[error]thing",
        "##[warning]indented", "##[notice]N: fyi", "std::vector<int>"]
    assert commands.annotations == [
        {"level": "error", "message": "bad\nthing", "file": "src/a.py", "line": 3, "col": 7, "end_line": 4,
         "end_col": 2, "title": "Type: error"},
        {"level": "warning", "message": "indented"},
        {"level": "notice", "message": "fyi", "title": "N"}]


def test_debug_only_with_debug_level() -> None:
    assert run([b"::debug::shown\n"], debug=True)[0] == b"##[debug]shown\n"
    assert run([b"::debug::shown\n"])[0] == b""


def test_malformed_and_unimplemented_commands_are_text() -> None:
    lines = [b"::error line=abc::x", b"::error bogus=1::x", b"::set-output name=a::b", b"::add-path::/x",
             b"::::", b":: spaced::x"]
    out, commands = run([b"\n".join(lines) + b"\n"])
    assert out == b"\n".join(lines) + b"\n"
    assert commands.annotations == []


def test_stop_commands_suspends_every_command_until_the_token() -> None:
    out, commands = run([b"::stop-commands::tok123\n::error::not one\n::group::no\n::tok123::\n::error::yes\n"])
    assert out == b"::error::not one\n::group::no\n##[error]yes\n"
    assert [a["message"] for a in commands.annotations] == ["yes"]


def _add_mask_pipeline(registry: SecretRegistry, *, stop_commands: bool) -> tuple[bytes, int]:
    got: list[bytes] = []
    masked = registry.stream(got.append)
    front = AddMaskFilter(registry, masked, trusted=True, source="test")
    stage = WorkflowCommands(registry.mask_text).filter(front) if stop_commands else front
    stage.write(b"::stop-commands::pause-9\n::add-mask::plain-value-4711\n::pause-9::\nplain-value-4711\n")
    stage.close()
    return b"".join(got), front.registered


def test_stop_commands_does_not_suspend_add_mask_with_control() -> None:
    # Control: without the workflow-command stage the ::add-mask:: line registers and the value is masked.
    out, registered = _add_mask_pipeline(SecretRegistry(), stop_commands=False)
    assert registered == 1 and b"plain-value-4711" not in out
    # With it, the registration goes on between ::stop-commands:: and the token (unlike GitHub): a file the
    # step prints (an untrusted report holding `::stop-commands::X`) must not switch off the step's own later
    # ::add-mask:: and have its fresh token printed in clear (tests/sandbox/test_redteam_round3.py).
    out, registered = _add_mask_pipeline(SecretRegistry(), stop_commands=True)
    assert registered == 1
    assert out == b"***\n"


def test_annotation_texts_are_masked_when_collected() -> None:
    registry = SecretRegistry()
    registry.add(SECRET, source="test")
    _, commands = run([f"::error file={SECRET[:9]}x,title=t {SECRET}::leak {SECRET} and %0A{SECRET}\n".encode()],
                      mask=registry.mask_text)
    text = repr(commands.annotations)
    for i in range(len(SECRET) - 5):
        assert SECRET[i:i + 6] not in text.replace(SECRET[:9] + "x", ""), "fragment leaked"
    assert "***" in commands.annotations[0]["message"]


def test_parse_command_shape() -> None:
    assert parse_command("  ::Error file=a,line=1::m::n") == ("error", {"file": "a", "line": "1"}, "m::n")
    assert parse_command("no") is None and parse_command("::x") is None


body = st.lists(st.sampled_from([
    b"::group::G\n", b"::endgroup::\n", b"::error file=f,line=2::e%0Ax\n", b"::warning::w\n", b"::debug::d\n",
    b"::stop-commands::T\n", b"::T::\n", b"plain\n", b"a::b\n", b"  ::notice::n\n", b"::", b":", b" ", b"\n",
    b"::add-mask::v\n", b"x" * 70, "é::".encode()]), max_size=30).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(body, st.lists(st.integers(0, 400), max_size=12))
def test_output_does_not_depend_on_how_it_is_cut(data: bytes, cuts: list[int]) -> None:
    whole, whole_commands = run([data], debug=True)
    points = sorted({c for c in cuts if c <= len(data)})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    split, split_commands = run(pieces, debug=True)
    assert split == whole
    assert split_commands.annotations == whole_commands.annotations
    # Nothing but command lines is ever removed: every plain line survives.
    for line in data.split(b"\n")[:-1]:
        if not line.lstrip(b" \t").startswith(b"::"):
            assert line in whole
