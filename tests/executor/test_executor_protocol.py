"""The step protocol end to end (`runnerlib run-job` and the Python API): outputs, env, path and summary files
reaching later steps, workflow commands, and the rules that keep what an untrusted step produces data.

Attack tests run the same products from a trusted producer as the control: there they are applied (so the
attack would work without the rule), from an untrusted one they are not."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runnerlib.config import get_config
from runnerlib.execution.timestamps import strip_stamps
from runnerlib.jobs import Job, JobDefinitionError
from runnerlib.plugins import PluginManager
from runnerlib.runner import JobRunner

REPO = Path(__file__).resolve().parents[2]
SECRET = "proto-secret-Tg42xWq9"


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_") and k not in ("LOG_FORMAT", "LOG_LEVEL")}
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "runnerlib.cli", *args], env=base, cwd=REPO,
                          capture_output=True, timeout=120)


def run_job_file(ws: Path, text: str, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    path = ws.parent / f"{ws.name}-job.yaml"
    path.write_text(text)
    return cli("run-job", str(path), "--workspace-root", str(ws), *extra, env=env)


def summary_json(ws: Path) -> dict:
    return json.loads((ws / "artifacts" / "logs" / "summary.json").read_text())


def skip_without_sandbox(output: bytes | str) -> None:
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    if "refused" in text and "sandbox" in text:
        pytest.skip("the sandbox cannot confine a step on this kernel")


def assert_no_fragment(text: str, secret: str = SECRET, size: int = 6) -> None:
    for i in range(len(secret) - size + 1):
        assert secret[i:i + size] not in text, f"fragment {secret[i:i + size]!r} leaked"


BUILD = """
name: proto
steps:
  - name: build
    command: |
      echo "version=1.2.3" >> "$GITHUB_OUTPUT"
      printf 'notes<<EOF\\nline one\\nline two\\nEOF\\n' >> "$REACTORCIDE_OUTPUT"
      echo "GREETING=hello" >> "$GITHUB_ENV"
      mkdir -p "$REACTORCIDE_ARTIFACTS_DIR/tools" && printf '#!/bin/sh\\necho mytool ran\\n' > "$REACTORCIDE_ARTIFACTS_DIR/tools/mytool"
      chmod +x "$REACTORCIDE_ARTIFACTS_DIR/tools/mytool"
      echo "$REACTORCIDE_ARTIFACTS_DIR/tools" >> "$GITHUB_PATH"
      echo "### Build: 1.2.3" >> "$GITHUB_STEP_SUMMARY"
      echo "::group::Compile"
      echo compiling
      echo "::endgroup::"
      echo "::error file=src/app.py,line=12,col=4,title=Lint::unused import"
      echo "::notice::built"
      echo "::debug::debug detail"
  - name: use
    depends_on: [build]
    condition: steps.build.outputs.version == '1.2.3'
    env:
      VERSION: ${{ steps.build.outputs.version }}
    command: 'echo "v=$VERSION cmd=${{ steps.build.outputs.version }} g=$GREETING"; mytool; echo "${{ steps.build.outputs.notes }}"'
  - name: not-run
    depends_on: [build]
    condition: ${{ steps.build.outputs.version == '9' }}
    command: echo should-not-run
  - name: report
    depends_on: [use]
    command: echo "## Report" >> "$REACTORCIDE_STEP_SUMMARY"
"""


def test_outputs_env_path_summary_and_commands_through_run_job(ws: Path) -> None:
    r = run_job_file(ws, BUILD)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "[use] v=1.2.3 cmd=1.2.3 g=hello" in out
    assert "[use] mytool ran" in out
    assert "[use] line one\n[use] line two" in out
    assert "[build] ##[group]Compile\n[build] compiling\n[build] ##[endgroup]" in out
    assert "[build] ##[error]src/app.py:12:4: Lint: unused import" in out
    assert "##[notice]built" in out and "##[debug]" not in out
    assert "condition `${{ steps.build.outputs.version == '9' }}` is false" in out
    assert f"step summaries: {ws}/artifacts/summary.md" in out
    assert (ws / "artifacts" / "summary.md").read_text() == "### Build: 1.2.3\n\n## Report\n"
    data = summary_json(ws)
    assert data["step_summary"] == f"{ws}/artifacts/summary.md"
    steps = {s["name"]: s for s in data["steps"]}
    assert steps["build"]["outputs"] == {"version": "1.2.3", "notes": "line one\nline two"}
    assert steps["build"]["annotations"] == [
        {"level": "error", "message": "unused import", "file": "src/app.py", "line": 12, "col": 4, "title": "Lint"},
        {"level": "notice", "message": "built"}]
    assert steps["build"]["summary"] is True and steps["use"]["summary"] is False
    assert steps["not-run"]["status"] == "skipped"
    log = strip_stamps((ws / "artifacts" / "logs" / "build.log").read_text())
    assert "##[group]Compile\ncompiling\n##[endgroup]\n" in log
    assert not (ws / "artifacts" / ".runnerlib-steps" / "build").exists()


def test_debug_commands_shown_with_log_level_debug(ws: Path) -> None:
    r = run_job_file(ws, BUILD, "--log-level", "debug")
    assert r.returncode == 0
    assert b"[build] ##[debug]debug detail" in r.stdout


def test_the_python_api_and_retry_and_files_per_attempt(ws: Path) -> None:
    job = Job("api")
    # The first attempt writes an output and fails; the second writes another: only the last attempt counts.
    job.add_step("flaky", 'n=$(cat "$REACTORCIDE_ARTIFACTS_DIR/n" 2>/dev/null || echo 0); '
                          'echo $((n+1)) > "$REACTORCIDE_ARTIFACTS_DIR/n"; '
                          'echo "attempt=$((n+1))" >> "$REACTORCIDE_OUTPUT"; [ "$n" = 1 ]',
                 retry={"max": 2, "exit_codes": [1]})
    job.add_step("show", ["echo", "got ${{ steps.flaky.outputs.attempt }}"], depends_on="flaky")
    config = get_config(environ={}, workspace_root=str(ws))
    out = io.BytesIO()
    code = JobRunner(config, job, plugins=PluginManager(), out=out, handle_signals=False).run()
    text = out.getvalue().decode()
    assert code == 0, text
    assert "[show] got 2" in text
    assert summary_json(ws)["steps"][0]["attempts"] == 2


@pytest.mark.parametrize(("command", "rule"), [
    ("echo ${{ steps.nope.outputs.x }}", "no step named 'nope'"),
    ("echo ${{ steps.other.outputs.x }}", "step 'other' is not upstream of 'b'"),
    ("echo ${{ secrets.TOKEN }}", "only ${{ steps.<step>.outputs.<name> }} expressions are"),
])
def test_references_are_checked_before_anything_runs(ws: Path, command: str, rule: str) -> None:
    job = Job("refs")
    job.add_step("a", "true")
    job.add_step("other", "true")
    job.add_step("b", command, depends_on=["a"])
    with pytest.raises(JobDefinitionError) as err:
        job.validate()
    assert rule in str(err.value) and "step 'b'" in str(err.value)


# --- untrusted products ---------------------------------------------------------------------------------

EVIL_ENV = """
name: evil
steps:
  - name: producer
    trust: {trust}
    command: |
      mkdir -p "$REACTORCIDE_ARTIFACTS_DIR/evil"
      printf '#!/bin/sh\\ntouch {marker}-path\\n' > "$REACTORCIDE_ARTIFACTS_DIR/evil/id"
      printf 'touch {marker}-bash-env\\n' > "$REACTORCIDE_ARTIFACTS_DIR/evil/env.sh"
      chmod -R a+rx "$REACTORCIDE_ARTIFACTS_DIR/evil"
      echo "$REACTORCIDE_ARTIFACTS_DIR/evil" >> "$GITHUB_PATH"
      echo "BASH_ENV=$REACTORCIDE_ARTIFACTS_DIR/evil/env.sh" >> "$GITHUB_ENV"
      echo "LD_PRELOAD=/nonexistent/evil.so" >> "$GITHUB_ENV"
      echo "data=from producer" >> "$GITHUB_OUTPUT"
  - name: deploy
    depends_on: [producer]
    command: 'id >/dev/null; bash -c true; echo "ld=[$LD_PRELOAD] data=[$REACTORCIDE_UNTRUSTED_OUTPUT_PRODUCER_DATA]"'
"""


@pytest.mark.parametrize("trust", ["trusted", "untrusted"])
def test_untrusted_env_and_path_never_reach_a_trusted_step(ws: Path, trust: str) -> None:
    marker = ws / "pwned"
    r = run_job_file(ws, EVIL_ENV.format(trust=trust, marker=marker))
    out = r.stdout.decode()
    skip_without_sandbox(out)
    assert r.returncode == 0, out + r.stderr.decode()
    if trust == "trusted":
        # Control: from a trusted producer the same files are applied; the trusted step runs the planted
        # `id` (PATH) and the planted BASH_ENV.
        assert (ws / "pwned-path").exists() and (ws / "pwned-bash-env").exists()
        assert "ld=[/nonexistent/evil.so] data=[]" in out
    else:
        assert not (ws / "pwned-path").exists() and not (ws / "pwned-bash-env").exists()
        assert "ld=[] data=[from producer]" in out
        assert ("[deploy] ignored what the untrusted step 'producer' set for later steps (a trusted step takes "
                "no environment from it): BASH_ENV, LD_PRELOAD, PATH") in out


INJECT = """
name: inject
steps:
  - name: producer
    trust: {trust}
    command: echo 'title=x; touch {marker}' >> "$GITHUB_OUTPUT"
  - name: deploy
    depends_on: [producer]
    command: echo ${{{{ steps.producer.outputs.title }}}}
"""


def test_untrusted_output_in_a_trusted_command_is_refused(ws: Path) -> None:
    marker = ws / "injected"
    # Control: from a trusted producer the value is substituted as raw text, as GitHub does: the `;` runs.
    r = run_job_file(ws, INJECT.format(trust="trusted", marker=marker))
    assert r.returncode == 0 and marker.exists()
    marker.unlink()
    r = run_job_file(ws, INJECT.format(trust="untrusted", marker=marker))
    assert r.returncode == 78, r.stdout + r.stderr
    err = (r.stdout + r.stderr).decode()
    assert "output of the untrusted step 'producer'" in err and "script injection" in err
    assert "$REACTORCIDE_UNTRUSTED_OUTPUT_PRODUCER_TITLE" in err
    assert not marker.exists()
    assert not re.search(rb"==> \S+ \[producer\]", r.stdout)  # refused before anything ran


def test_untrusted_output_in_a_trusted_env_value_is_refused() -> None:
    job = Job("j")
    job.add_step("pr", "true", trust="untrusted")
    job.add_step("deploy", "true", depends_on="pr", env={"X": "${{ steps.pr.outputs.y }}"})
    with pytest.raises(JobDefinitionError, match="env.X: .*untrusted step 'pr'"):
        job.validate()
    # An untrusted consumer may use it (it runs sandboxed), and a trusted step's condition may compare it.
    job = Job("j")
    job.add_step("pr", "true", trust="untrusted")
    job.add_step("more", "echo ${{ steps.pr.outputs.y }}", depends_on="pr", trust="untrusted")
    job.add_step("deploy", "true", depends_on="pr", condition="steps.pr.outputs.y == 'ok'")
    job.validate()


def test_untrusted_consumer_gets_products_masked_and_sandboxed(ws: Path) -> None:
    job_text = """
name: chain
steps:
  - name: make
    command: |
      echo "token=$DEPLOY_TOKEN" >> "$GITHUB_OUTPUT"
      echo "LEAK=$DEPLOY_TOKEN" >> "$GITHUB_ENV"
      echo "PLAIN=visible" >> "$GITHUB_ENV"
  - name: pr
    trust: untrusted
    depends_on: [make]
    command: 'echo "t=${{ steps.make.outputs.token }} leak=[$LEAK] plain=$PLAIN"; env > "$REACTORCIDE_ARTIFACTS_DIR/pr-env.txt"'
"""
    r = run_job_file(ws, job_text, env={"DEPLOY_TOKEN": SECRET})
    out = r.stdout.decode()
    skip_without_sandbox(out)
    assert r.returncode == 0, out + r.stderr.decode()
    assert "t=*** leak=[] plain=visible" in out
    assert_no_fragment((ws / "artifacts" / "pr-env.txt").read_text())


def test_secrets_in_outputs_summary_and_annotations_are_masked(ws: Path) -> None:
    job_text = """
name: masked
steps:
  - name: leak
    command: |
      echo "token=$DEPLOY_TOKEN" >> "$GITHUB_OUTPUT"
      echo "Deployed with $DEPLOY_TOKEN" >> "$GITHUB_STEP_SUMMARY"
      echo "::warning title=$DEPLOY_TOKEN,file=$DEPLOY_TOKEN.py::failed for $DEPLOY_TOKEN"
      echo "::group::$DEPLOY_TOKEN"
  - name: use
    depends_on: [leak]
    command: 'test "${{ steps.leak.outputs.token }}" = "$DEPLOY_TOKEN" && echo trusted-consumer-got-the-value'
"""
    r = run_job_file(ws, job_text, env={"DEPLOY_TOKEN": SECRET})
    out = r.stdout.decode() + r.stderr.decode()
    assert r.returncode == 0, out
    assert "trusted-consumer-got-the-value" in out  # a trusted consumer gets the raw value, as on GitHub
    written = [out, (ws / "artifacts" / "summary.md").read_text(),
               (ws / "artifacts" / "logs" / "summary.json").read_text(),
               (ws / "artifacts" / "logs" / "leak.log").read_text(),
               (ws / "artifacts" / "logs" / "use.log").read_text()]
    for text in written:
        assert_no_fragment(text)
    data = summary_json(ws)["steps"][0]
    assert data["outputs"]["token"] == "***" and data["annotations"][0]["title"] == "***"


def test_malformed_output_file_fails_the_step(ws: Path) -> None:
    r = run_job_file(ws, "name: bad\nsteps:\n  - name: s\n    command: echo 'oops' >> \"$GITHUB_OUTPUT\"\n")
    assert r.returncode == 1
    assert b"step files: output file:1: expected NAME=VALUE or NAME<<DELIMITER" in r.stdout


def test_untrusted_step_cannot_make_the_runner_read_through_a_symlink(ws: Path) -> None:
    secret_file = ws.parent / f"{ws.name}-runner-only.txt"
    secret_file.write_text(f"stolen={SECRET}\n")
    job_text = f"""
name: link
steps:
  - name: pr
    trust: untrusted
    command: rm -f "$GITHUB_OUTPUT" && ln -s {secret_file} "$GITHUB_OUTPUT"
  - name: next
    trust: untrusted
    depends_on: [pr]
    condition: always
    command: echo "got=[${{{{ steps.pr.outputs.stolen }}}}]"
"""
    r = run_job_file(ws, job_text)
    out = r.stdout.decode()
    skip_without_sandbox(out)
    assert "output file: is a symlink (not followed)" in out
    assert "[next] got=[]" in out and r.returncode == 1
    assert_no_fragment(out)
    # Control: followed, the link gives the runner-only file's content (what the runner would have passed on).
    from runnerlib.execution.step_files import parse_assignments

    link = ws / "control-link"
    link.symlink_to(secret_file)
    assert parse_assignments(link.read_bytes(), label="control")["stolen"] == SECRET


def _yaml_blocks(doc: str, first_line: str) -> str:
    text = (REPO / "docs" / doc).read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    return next(b for b in blocks if b.startswith(first_line))


@pytest.mark.parametrize(("doc", "first_line", "expected"), [
    ("step-protocol.md", "name: release", "[publish] publishing 1.4.2 from "),
    ("executor.md", "name: retries", "attempt 1/4 failed (exit 75); retrying in 2s"),
])
def test_the_docs_examples_run_as_written(ws: Path, doc: str, first_line: str, expected: str) -> None:
    r = run_job_file(ws, _yaml_blocks(doc, first_line))
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert expected in out


def test_a_planted_summary_link_is_replaced_not_followed(ws: Path) -> None:
    target = ws.parent / f"{ws.name}-runner-file.txt"
    target.write_text("the runner's own file\n")
    job_text = f"""
name: plant
steps:
  - name: pr
    trust: untrusted
    command: |
      ln -s {target} "$REACTORCIDE_ARTIFACTS_DIR/summary.md" && echo planted
      echo "hello from the PR" >> "$GITHUB_STEP_SUMMARY"
"""
    r = run_job_file(ws, job_text)
    out = r.stdout.decode()
    skip_without_sandbox(out)
    assert r.returncode == 0, out + r.stderr.decode()
    summary = ws / "artifacts" / "summary.md"
    assert "[pr] planted" in out
    assert not summary.is_symlink() and summary.read_text() == "hello from the PR\n"
    assert target.read_text() == "the runner's own file\n"
    # Control: a writer that follows links would have written the runner's file.
    link = ws / "control-link"
    link.symlink_to(target)
    with open(link, "a") as fh:
        fh.write("overwritten\n")
    assert "overwritten" in target.read_text()
