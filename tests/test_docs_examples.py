"""The README's quick start and every example in docs/ run as written, copied out of the Markdown.

Every ```console, ```sh and ```python block in README.md and docs/**/*.md carries a marker on the line
before it (an HTML comment, invisible when rendered):

    <!-- example: run [exit=N] [cwd=DIR] -->   run it; the last command (a script: the process) exits N (0)
    <!-- example: file PATH -->                the next block's text is written to PATH (then later blocks use it)
    <!-- example: skip (why) -->               not runnable here (inside a job container, an API summary, ...)

The blocks of one document run in order, in one fresh directory holding `myproject` (a small git checkout
with one passing test), with this install's `runnerlib` and `python` first on PATH. A console block's
commands are its `$ ` lines (a line ending in `\\` continues); the other lines are sample output, not checked.
Every command but the last must succeed.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cli_testlib import REPO, clean_env

from runnerlib.testing import reachable_tempdir

MARKER = re.compile(r"^<!-- example: (run|file|skip)\b(.*?)-->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")
RUNNABLE = ("console", "sh", "python")


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    text: str
    kind: str = ""
    args: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def _documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def blocks(doc: Path) -> list[Block]:
    """The fenced blocks of `doc` with their markers."""
    lines = doc.read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start = i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        block = Block(doc, start + 1, fence.group(1), "\n".join(lines[start + 1:end]) + "\n")
        marker = MARKER.match(lines[start - 1]) if start else None
        if marker:
            block.kind = marker.group(1)
            rest = marker.group(2).strip()
            if block.kind == "file":
                block.args["path"] = rest
            elif block.kind == "run":
                block.args.update(part.split("=", 1) for part in rest.split() if "=" in part)
            else:
                block.args["why"] = rest
        out.append(block)
        i = end + 1
    return out


def test_every_example_block_is_marked() -> None:
    unmarked = [b.where for doc in _documents() for b in blocks(doc) if b.lang in RUNNABLE and not b.kind]
    assert not unmarked, f"mark these blocks `<!-- example: run|skip (why) -->`: {unmarked}"
    unexplained = [b.where for doc in _documents() for b in blocks(doc) if b.kind == "skip" and not b.args["why"]]
    assert not unexplained, f"say why these examples cannot run: {unexplained}"


def _commands(block: Block) -> list[str]:
    if block.lang == "sh":
        text = "\n".join(line for line in block.text.splitlines() if not line.lstrip().startswith("#"))
        return [c for c in re.split(r"(?<!\\)\n", text) if c.strip()]
    commands: list[str] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("$ "):
            command = lines[i][2:]
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command += "\n" + lines[i]  # bash joins the lines itself
            commands.append(command)
        i += 1
    return commands


def _project(root: Path) -> None:
    proj = root / "myproject"
    proj.mkdir()
    (proj / "test_sample.py").write_text("def test_ok():\n    assert 1 + 1 == 2\n")
    (proj / ".gitignore").write_text(".venv/\n__pycache__/\n.reactorcide/runs/\n")
    git = ["git", "-c", "user.name=docs", "-c", "user.email=docs@example.invalid", "-C", str(proj)]
    subprocess.run(["git", "init", "-q", str(proj)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    # The README runs its examples from the repository: the same names here.
    os.symlink(REPO / "examples", root / "examples")
    os.symlink(REPO / ".venv", root / ".venv")


def _run(block: Block, root: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cwd = root / block.args.get("cwd", ".")
    if block.lang == "python":
        return subprocess.run([sys.executable, "-c", block.text], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=300)
    commands = _commands(block)
    assert commands, f"{block.where}: no command in the block"
    script = ["set -u"]
    for command in commands[:-1]:
        script.append(command)
        script.append(f"rc=$?; [ $rc -eq 0 ] || {{ echo \"example command failed ($rc): \"{shlex.quote(command)} >&2;"
                      " exit 99; }")
    script.append(commands[-1])
    return subprocess.run(["bash", "-c", "\n".join(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("doc", [d for d in _documents() if any(b.kind == "run" for b in blocks(d))],
                         ids=lambda d: str(d.relative_to(REPO)))
def test_examples_run_as_written(doc: Path) -> None:
    # Untrusted steps (another uid under root) must reach the workspaces made here: not pytest's 0700 tmp.
    with reachable_tempdir("rl-docs-") as tmp_path:
        _run_document(doc, tmp_path)


def _run_document(doc: Path, tmp_path: Path) -> None:
    _project(tmp_path)
    env = clean_env(TMPDIR=str(tmp_path), HOME=str(tmp_path / "home"),
                    PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}")
    (tmp_path / "home").mkdir()
    for block in blocks(doc):
        if block.kind == "file":
            target = tmp_path / block.args["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text)
        elif block.kind == "run":
            r = _run(block, tmp_path, env)
            want = int(block.args.get("exit", "0"))
            assert r.returncode == want, f"{block.where}: exit {r.returncode}, not {want}\n{r.stdout}\n{r.stderr}"
            assert "Traceback" not in r.stderr, f"{block.where}:\n{r.stderr}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_relative_links_and_anchors_resolve() -> None:
    """Moving sections to docs/internals/ kept every link working."""
    broken = []
    for doc in [*_documents(), REPO / "SECURITY.md"]:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve()
            if not dest.exists():
                broken.append(f"{doc.relative_to(REPO)} -> {target}")
            elif anchor and dest.suffix == ".md":
                anchors = {_slug(h) for h in re.findall(r"^#+ (.*)$", dest.read_text(), re.M)}
                if anchor not in anchors:
                    broken.append(f"{doc.relative_to(REPO)} -> {target}")
    assert not broken, broken
