"""The script a prestarted container's shell sources (execution/container_prestart.py): whatever the values
hold, they arrive as written and nothing in them runs. No engine needed: /bin/sh sources it here."""

from __future__ import annotations

import subprocess
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from runnerlib.execution.container_prestart import _script, first_step
from runnerlib.jobs import Job

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True).filter(
    lambda n: n not in ("PATH", "PWD", "OLDPWD", "IFS", "PS4", "PPID", "ENV", "HOME", "SHLVL", "_", "OPTIND"))
values = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=60)


def _source(script: bytes, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    path = tmp_path / "start"
    path.write_bytes(script)
    return subprocess.run(["sh", "-c", f". {path}"], capture_output=True, env={"PATH": "/usr/bin:/bin"}, timeout=30)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(names, values, max_size=6))
def test_values_arrive_exactly(tmp_path_factory: object, env: dict[str, str]) -> None:
    tmp = tmp_path_factory.mktemp("s")  # type: ignore[attr-defined]
    result = _source(_script(env, str(tmp), ["env", "-0"]), tmp)
    assert result.returncode == 0, result.stderr
    seen = dict(item.split("=", 1) for item in result.stdout.decode("utf-8", "surrogateescape").split("\0") if item)
    for name, value in env.items():
        assert seen[name] == value


def test_nothing_in_a_value_runs_and_the_command_is_the_step_s(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = {"A": f"'; touch {marker}; '", "B": f"$(touch {marker})", "C": f"`touch {marker}`\nexport D=1"}
    result = _source(_script(evil, str(tmp_path), 'echo "cwd=$(pwd) a=$A"; exit 4'), tmp_path)
    assert result.returncode == 4
    assert result.stdout.decode() == f"cwd={tmp_path} a={evil['A']}\n"
    assert not marker.exists()
    # Control: the same text as the step's command does run (the script runs the command, only it).
    _source(_script({}, str(tmp_path), f"touch {marker}"), tmp_path)
    assert marker.exists()


def test_the_first_step_is_one_without_dependencies_or_condition() -> None:
    job = Job("j")
    job.add_step("gated", "true", condition="branch == 'main'")
    job.add_step("build", "true")
    job.add_step("test", "true", depends_on="build")
    assert first_step(job).name == "build"
    lone = Job("k")
    lone.add_step("only", "true", condition="branch == 'main'")
    assert first_step(lone) is None
    argv = Job("a")
    argv.add_step("distroless", ["/app/server", "--check"])  # needs no sh: not started early
    assert first_step(argv) is None
