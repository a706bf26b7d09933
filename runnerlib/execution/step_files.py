"""The step files of GitHub's step protocol: what a step writes to $REACTORCIDE_OUTPUT, $REACTORCIDE_ENV,
$REACTORCIDE_PATH and $REACTORCIDE_STEP_SUMMARY (aliases GITHUB_OUTPUT, GITHUB_ENV, GITHUB_PATH,
GITHUB_STEP_SUMMARY), parsed strictly and read without trusting the step.

Formats (GitHub's):
- output and env files: `NAME=value` lines, or a multi-line value as `NAME<<DELIMITER`, the value's lines,
  then a line holding exactly DELIMITER. Whichever of `=` and `<<` comes first decides the form; a later
  assignment of the same name wins. Empty lines are skipped; a CR before the LF is dropped (scripts written
  on Windows). Anything else is an error naming the file and line, and the file is used not at all: a value
  half-read is worse than none.
- path file: one absolute directory per line (no ':' and no NUL: each line is one PATH entry).
- summary: markdown, passed on as it is (masked).

Reading (`read_step_file`): from a directory fd, O_NOFOLLOW | O_NONBLOCK, a regular file only (not a
symlink, FIFO or device the step planted), at most MAX_FILE_BYTES. A missing file counts as empty.
"""

from __future__ import annotations

import errno
import os
import re
import stat

# GitHub limits a step summary to 1 MiB; the same bound keeps every file cheap to read and parse.
MAX_FILE_BYTES = 1024 * 1024

# file name in the step's directory -> the variables naming it (REACTORCIDE_ first, GitHub's alias second).
FILES = {
    "output": ("REACTORCIDE_OUTPUT", "GITHUB_OUTPUT"),
    "env": ("REACTORCIDE_ENV", "GITHUB_ENV"),
    "path": ("REACTORCIDE_PATH", "GITHUB_PATH"),
    "summary.md": ("REACTORCIDE_STEP_SUMMARY", "GITHUB_STEP_SUMMARY"),
}
OUTPUT_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class StepFileError(ValueError):
    """A step file that breaks its format or the reading rules; the message names the file and line."""


def parse_assignments(data: bytes, *, label: str, names: re.Pattern[str] = OUTPUT_NAME_RE) -> dict[str, str]:
    """Parse an output or env file (see the module docstring) into {name: value}."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StepFileError(f"{label}: not UTF-8 (byte {exc.start})") from None
    if "\0" in text:
        raise StepFileError(f"{label}: NUL byte (no variable can hold one)")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    values: dict[str, str] = {}
    i = 0
    while i < len(lines):
        number, line = i + 1, lines[i].removesuffix("\r")
        i += 1
        if not line:
            continue
        eq, heredoc = line.find("="), line.find("<<")
        if heredoc >= 0 and (eq < 0 or heredoc < eq):
            name, delimiter = line[:heredoc], line[heredoc + 2:]
            if not delimiter:
                raise StepFileError(f"{label}:{number}: {name}<<: empty delimiter")
            body: list[str] = []
            while i < len(lines) and lines[i].removesuffix("\r") != delimiter:
                body.append(lines[i].removesuffix("\r"))
                i += 1
            if i >= len(lines):
                raise StepFileError(f"{label}:{number}: {name}<<{delimiter}: no line {delimiter!r} ends the value")
            i += 1
            value = "\n".join(body)
        elif eq >= 0:
            name, value = line[:eq], line[eq + 1:]
        else:
            raise StepFileError(f"{label}:{number}: expected NAME=VALUE or NAME<<DELIMITER")
        if not names.fullmatch(name):
            raise StepFileError(f"{label}:{number}: {name[:64]!r} is not a valid name "
                                f"(letters, digits, '_'{'' if names is ENV_NAME_RE else ', -'}; not a digit first)")
        values[name] = value
    return values


def parse_paths(data: bytes, *, label: str) -> list[str]:
    """Parse a path file: one absolute directory per line, in the order written."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StepFileError(f"{label}: not UTF-8 (byte {exc.start})") from None
    paths = []
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line:
            continue
        if not line.startswith("/") or ":" in line or "\0" in line:
            raise StepFileError(f"{label}:{number}: a PATH entry must be one absolute directory (no ':')")
        paths.append(line)
    return paths


def read_step_file(dir_fd: int, name: str, *, label: str) -> bytes:
    """The bytes of `name` in the directory `dir_fd`, read as the module docstring says ("" when missing)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return b""
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StepFileError(f"{label}: is a symlink (not followed)") from None
        raise StepFileError(f"{label}: cannot open: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StepFileError(f"{label}: not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise StepFileError(f"{label}: larger than {MAX_FILE_BYTES} bytes")
        chunks, size = [], 0
        while size <= MAX_FILE_BYTES:
            chunk = os.read(fd, MAX_FILE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_FILE_BYTES:  # grew while we read it
            raise StepFileError(f"{label}: larger than {MAX_FILE_BYTES} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)
