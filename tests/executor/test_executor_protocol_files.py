"""The step files' formats (GitHub's `NAME=value` and `NAME<<DELIMITER`), parsed strictly, and how they are
read: no symlink, no FIFO, nothing over the size limit."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runnerlib.execution.step_files import (
    ENV_NAME_RE,
    MAX_FILE_BYTES,
    StepFileError,
    parse_assignments,
    parse_paths,
    read_step_file,
)


def test_both_forms_and_the_last_assignment_wins() -> None:
    data = b"a=1\nversion<<EOF\nline one\nline=two\nEOF\n\nurl=http://x/?q=1\r\na=2\n"
    assert parse_assignments(data, label="output file") == {
        "a": "2", "version": "line one\nline=two", "url": "http://x/?q=1"}


def test_the_first_of_equals_and_heredoc_decides() -> None:
    assert parse_assignments(b"a=b<<c\n", label="o") == {"a": "b<<c"}
    assert parse_assignments(b"a<<E\nx=1\nE\n", label="o") == {"a": "x=1"}


@pytest.mark.parametrize(("data", "rule"), [
    (b"novalue\n", "line 1|:1: expected NAME=VALUE"),
    (b"ok=1\n1bad=2\n", ":2: '1bad' is not a valid name"),
    (b"a<<EOF\nnever closed\n", ":1: a<<EOF: no line 'EOF' ends the value"),
    (b"a<<\n", "empty delimiter"),
    (b"a=\xff\n", "not UTF-8"),
    (b"a=x\x00y\n", "NUL byte"),
    (b"=v\n", "'' is not a valid name"),
])
def test_malformed_files_are_refused_with_file_and_line(data: bytes, rule: str) -> None:
    with pytest.raises(StepFileError) as err:
        parse_assignments(data, label="output file")
    assert str(err.value).startswith("output file")
    assert re.search(rule, str(err.value)), str(err.value)


def test_env_names_are_shell_names_outputs_may_have_dashes() -> None:
    assert parse_assignments(b"my-out=1\n", label="o") == {"my-out": "1"}
    with pytest.raises(StepFileError, match="not a valid name"):
        parse_assignments(b"my-var=1\n", label="env file", names=ENV_NAME_RE)


def test_path_file() -> None:
    assert parse_paths(b"/opt/a\n\n/opt/b\r\n", label="path file") == ["/opt/a", "/opt/b"]
    for bad in (b"relative/dir\n", b"/a:/b\n"):
        with pytest.raises(StepFileError, match="one absolute directory"):
            parse_paths(bad, label="path file")


names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
one_line = st.text(st.characters(blacklist_characters="\n\r\x00", blacklist_categories=("Cs",)), max_size=40)
multi_line = st.lists(one_line, min_size=1, max_size=5).map("\n".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(names, st.one_of(one_line, multi_line), st.booleans()), max_size=10))
def test_round_trip_of_what_a_script_writes(entries: list[tuple[str, str, bool]]) -> None:
    # What `echo "name=value" >> $GITHUB_OUTPUT` and the heredoc form write reads back as written.
    out, expected = [], {}
    for name, value, heredoc in entries:
        if heredoc or "\n" in value:
            delimiter = "ghadelimiter_7f3a"
            out.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
        else:
            out.append(f"{name}={value}\n")
        expected[name] = value
    assert parse_assignments("".join(out).encode(), label="o", names=ENV_NAME_RE) == expected


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_are_refused_cleanly(data: bytes) -> None:
    for parse in (lambda d: parse_assignments(d, label="o"), lambda d: parse_paths(d, label="p")):
        try:
            result = parse(data)
        except StepFileError as exc:
            assert str(exc).startswith(("o", "p"))
            continue
        if isinstance(result, dict):
            assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", k) and "\0" not in v for k, v in result.items())
        else:
            assert all(p.startswith("/") and ":" not in p for p in result)


def _dir(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY)


def test_read_refuses_symlink_fifo_and_oversize(tmp_path: Path) -> None:
    secret = tmp_path / "outside"
    secret.write_text("not yours")
    (tmp_path / "link").symlink_to(secret)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_bytes(b"a" * (MAX_FILE_BYTES + 1))
    (tmp_path / "ok").write_bytes(b"a=1\n")
    fd = _dir(tmp_path)
    try:
        assert read_step_file(fd, "ok", label="output file") == b"a=1\n"
        assert read_step_file(fd, "missing", label="output file") == b""
        with pytest.raises(StepFileError, match="symlink"):
            read_step_file(fd, "link", label="output file")
        with pytest.raises(StepFileError, match="not a regular file"):
            read_step_file(fd, "fifo", label="output file")  # never blocks on a FIFO without a writer
        with pytest.raises(StepFileError, match="larger than"):
            read_step_file(fd, "big", label="output file")
        # Control: the same link, followed, would have given the outside file's content.
        assert (tmp_path / "link").read_text() == "not yours"
    finally:
        os.close(fd)
