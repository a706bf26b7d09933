"""The local workflow runner end to end: a real DAG of processes, fan-out/fan-in, failure, always, triggers."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from runnerlib.cli import main
from runnerlib.security.registry import SecretRegistry
from runnerlib.workflow.local_runner import LocalWorkflowRunner, render_mermaid, render_tree
from runnerlib.workflow.models import parse_workflow_text

PY = sys.executable

# 8 static jobs (+2 for_each instances, +1 triggered at run time): fan-out from setup, fan-in at package,
# a failing deploy, an any_failed notifier, an always cleanup that triggers one more job, and a job skipped
# because its dependency failed.
PIPELINE = f"""
id: pipeline
name: Local pipeline
vars:
  GREETING: hello
jobs:
  setup:
    command: echo "setup $GREETING"
  lint:
    needs: setup
    command: |
      echo lint
      echo '{{"reactorcide_trigger":1,"key_id":"0","payload":"{{}}","signature":"AA=="}}'
  test:
    needs: setup
    for_each: [py311, py312]
    item_var: PYVER
    command: |
      {PY} -c "import os, runnerlib; runnerlib.workflow_context().set_output('tested', os.environ['PYVER'])"
  package:
    needs: [lint, test]
    command: |
      {PY} -c "import runnerlib; c = runnerlib.workflow_context(); c.set_var('VERSION', '1.2.3'); c.set_output('artifact', 'app-1.2.3.tar.gz')"
  deploy:
    needs: package
    command: echo "deploying $VERSION"; exit 7
  smoke:
    needs: deploy
    command: echo never
  notify:
    needs: deploy
    condition: any_failed
    command: |
      {PY} -c "import runnerlib; r = runnerlib.get_job_result('deploy'); print('deploy ended', r['status'], r['exit_code'])"
  cleanup:
    needs: [deploy]
    condition: always
    command: |
      {PY} -c "import runnerlib; runnerlib.trigger_job('report', job_command='echo report \\$REASON', env={{'REASON': 'cleanup-done'}}, depends_on=['cleanup'])"
"""


def _repo() -> Path:
    root = Path(tempfile.mkdtemp(prefix="wf-local-"))
    os.chmod(root, 0o755)
    (root / "README").write_text("source\n")
    return root


def _run(text: str, launcher: str = "shell", **kw) -> tuple:
    lines: list[str] = []
    workflow = parse_workflow_text(text, "pipeline.yaml")
    runner = LocalWorkflowRunner(workflow, code_dir=_repo(), registry=kw.pop("registry", SecretRegistry()),
                                 launcher=launcher, echo=lines.append, max_parallel=kw.pop("max_parallel", 3),
                                 **kw)
    return runner.run(), lines


def _check_pipeline(result, lines: list[str]) -> None:
    status = {n.name: n.status for n in result.nodes}
    assert status == {
        "setup": "success", "lint": "success", "test[py311]": "success", "test[py312]": "success",
        "package": "success", "deploy": "failed", "smoke": "skipped", "notify": "success",
        "cleanup": "success", "report": "success",
    }
    assert result.node("deploy").exit_code == 7 and not result.ok and result.exit_code == 1
    assert result.node("smoke").reason == "deploy did not succeed"
    assert result.node("report").triggered_by == "cleanup"
    out = "\n".join(lines)
    assert "[setup] setup hello" in out                      # workflow vars reach the job
    assert "[deploy] deploying 1.2.3" in out                 # a var set by an ancestor reaches its dependants
    assert "[notify] deploy ended failed 7" in out           # get_job_result from the local state
    assert "[report] report cleanup-done" in out             # the job triggered at run time ran
    # Fan-in: package started only after every instance of test and lint finished.
    started = {line[2:]: i for i, line in enumerate(lines) if line.startswith("▶ ")}
    finished = {line.split(":")[0][2:]: i for i, line in enumerate(lines) if line[:2] in ("✓ ", "✗ ")}
    for dep in ("lint", "test[py311]", "test[py312]"):
        assert finished[dep] < started["package"]
    outputs = json.loads(result.output_file.read_text())
    assert outputs["vars"] == {"GREETING": "hello", "VERSION": "1.2.3"}
    assert outputs["outputs"]["package"] == {"artifact": "app-1.2.3.tar.gz"}
    assert outputs["outputs"]["test[py312]"] == {"tested": "py312"}
    report = result.report_file.read_text()
    assert "```mermaid" in report and "flowchart TD" in report and "| deploy | failed |" in report
    state = json.loads((result.run_dir / "state.json").read_text())
    assert state["jobs"]["cleanup"]["status"] == "success"
    # Each job had its own workspace with its own copy of the source.
    workspaces = {n.workspace for n in result.nodes if n.workspace}
    assert len(workspaces) == 9 and all((w / "src" / "README").exists() for w in workspaces)


def test_pipeline_end_to_end_shell_launcher() -> None:
    result, lines = _run(PIPELINE)
    _check_pipeline(result, lines)


def test_pipeline_end_to_end_as_the_worker_runs_jobs() -> None:
    """Every job through `python -m runnerlib.cli run` with the REACTORCIDE_* environment."""
    result, lines = _run(PIPELINE, launcher="runnerlib")
    _check_pipeline(result, lines)
    # The jobs' runners announced their keys and signed their triggers; none was forged.
    assert not result.errors
    assert (result.node("cleanup").workspace / "trigger-signing.pub").exists()
    out = "\n".join(lines)
    assert "[cleanup] (signed trigger verified: report)" in out
    # The line lint printed in the trigger format was flagged and not acted on.
    assert result.node("lint").rejected_lines >= 1 and result.node("cleanup").rejected_lines == 0
    assert "[lint] warning: rejected a line claiming to be a trigger" in out


def test_dag_pictures() -> None:
    result, _ = _run(PIPELINE)
    tree = render_tree(result.nodes)
    assert tree.splitlines()[0].startswith("✓ setup")
    assert "package ↑" in tree and "(triggered)" in tree
    mermaid = render_mermaid(result.nodes)
    ids = {n.name: f"j{i}" for i, n in enumerate(result.nodes)}
    assert f"{ids['deploy']} -->|any_failed| {ids['notify']}" in mermaid
    assert f"{ids['deploy']} -->|always| {ids['cleanup']}" in mermaid
    assert f"{ids['cleanup']} -.->|triggers| {ids['report']}" in mermaid
    assert f"class {ids['deploy']} failed" in mermaid


RENDEZVOUS = f"""
name: rendezvous
jobs:
  a:
    command: |
      {PY} -c "import os,time,pathlib; d=pathlib.Path(os.environ['MEET']); (d/'a').touch(); t=time.time()+20
      while not (d/'b').exists():
          assert time.time() < t, 'b never came'; time.sleep(0.05)"
  b:
    command: |
      {PY} -c "import os,time,pathlib; d=pathlib.Path(os.environ['MEET']); (d/'b').touch(); t=time.time()+20
      while not (d/'a').exists():
          assert time.time() < t, 'a never came'; time.sleep(0.05)"
"""


def test_independent_jobs_run_in_parallel() -> None:
    meet = tempfile.mkdtemp(prefix="wf-meet-")
    result, _ = _run(RENDEZVOUS, max_parallel=2, variables={"MEET": meet})
    assert [n.status for n in result.nodes] == ["success", "success"]


def test_max_parallel_bounds_the_jobs_running_at_once() -> None:
    """Control for the test above: with one slot the two jobs cannot meet (the first times out)."""
    meet = tempfile.mkdtemp(prefix="wf-meet-")
    text = RENDEZVOUS.replace("    command: |\n", "    timeout: 2\n    command: |\n")
    result, _ = _run(text, max_parallel=1, variables={"MEET": meet})
    assert result.node("a").status == "failed" and "timed out" in result.node("a").reason


def test_any_failed_sees_indirect_failures_and_is_skipped_otherwise() -> None:
    text = """
name: f
jobs:
  a: {command: "exit 1"}
  b: {command: "true", needs: a}
  alert: {command: "echo alert", needs: b, condition: any_failed}
  ok: {command: "true"}
  quiet: {command: "true", needs: ok, condition: any_failed}
"""
    result, _ = _run(text)
    status = {n.name: n.status for n in result.nodes}
    assert status == {"a": "failed", "b": "skipped", "alert": "success", "ok": "success", "quiet": "skipped"}


def test_trigger_loops_stop_at_max_jobs() -> None:
    text = f"""
name: loop
jobs:
  again:
    command: |
      {PY} -c "import runnerlib; runnerlib.trigger_job('again')"
"""
    result, lines = _run(text, max_jobs=4)
    assert len(result.nodes) == 4 and result.errors and "more than 4 jobs" in result.errors[0]
    assert result.exit_code == 1


def test_bad_triggers_are_reported_not_run() -> None:
    text = f"""
name: bad
jobs:
  t:
    command: |
      {PY} -c "import runnerlib; runnerlib.trigger_jobs([{{'job_name': 'nowhere'}}, {{'job_name': 'x', 'job_command': 'true', 'depends_on': ['ghost']}}])"
"""
    result, _ = _run(text)
    assert [n.name for n in result.nodes] == ["t"]
    assert any("not a job of this workflow" in e for e in result.errors)
    assert any("'ghost'" in e for e in result.errors)


def test_secrets_are_masked_in_the_terminal_logs_and_report() -> None:
    secret = "pw-Zx81-very-secret"
    registry = SecretRegistry()
    registry.add(secret, source="test")
    text = f"""
name: secrets
jobs:
  leak:
    command: |
      echo "the password is {secret}"; {PY} -c "import runnerlib; runnerlib.workflow_context().set_output('p', '{secret}')"; exit 3
"""
    result, lines = _run(text, registry=registry)
    everything = "\n".join(lines) + result.report_file.read_text() + result.output_file.read_text()
    everything += (result.node("leak").workspace / "job.log").read_text()
    for fragment in (secret, secret[:8], secret[-8:]):
        assert fragment not in everything
    assert "the password is ***" in "\n".join(lines)


def test_cli_workflow_run_validate_list(tmp_path: Path) -> None:
    repo = _repo()
    wf_dir = repo / ".reactorcide" / "workflows"
    wf_dir.mkdir(parents=True)
    (wf_dir / "ci.yaml").write_text(
        "id: ci\nname: CI\non: {events: [push], branches: [main]}\njobs:\n  a: {command: echo A}\n"
        "  b: {command: echo B, needs: a}\n")
    runner = CliRunner()
    listed = runner.invoke(main, ["workflow", "list", "--dir", str(repo), "--event", "push", "--branch", "dev",
                                  "--json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout)[0]["selected"] is False
    valid = runner.invoke(main, ["workflow", "validate", "--dir", str(repo)])
    assert valid.exit_code == 0 and "ok:" in valid.stdout
    skipped = runner.invoke(main, ["workflow", "run", str(wf_dir / "ci.yaml"), "--event", "push",
                                   "--branch", "dev"])
    assert skipped.exit_code == 0 and "does not start" in skipped.stdout
    ran = runner.invoke(main, ["workflow", "run", str(wf_dir / "ci.yaml"), "--event", "push", "--branch", "main",
                               "--launcher", "shell", "--run-dir", str(tmp_path / "run")])
    assert ran.exit_code == 0, ran.output
    assert "[b] B" in ran.stdout and "2 jobs: 2 success" in ran.stdout
    assert (tmp_path / "run" / "report.md").exists() and (tmp_path / "run" / "workflow-output.json").exists()
    (wf_dir / "bad.yaml").write_text("name: x\njobs:\n  a: {command: x, timeout: never}\n")
    invalid = runner.invoke(main, ["workflow", "validate", "--dir", str(repo)])
    assert invalid.exit_code == 78 and "bad.yaml:3: jobs.a.timeout" in invalid.stderr


def test_cli_trigger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REACTORCIDE_TRIGGERS_FILE", str(tmp_path / "triggers.json"))
    for name in ("REACTORCIDE_COORDINATOR_URL", "REACTORCIDE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["trigger", "deploy", "--env", "A=1", "--depends-on", "test",
                                       "--condition", "always", "--timeout", "10m", "--priority", "3"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "triggers.json").read_text())
    assert data["operation_id"] == result.stdout.strip()
    assert data["jobs"] == [{"job_name": "deploy", "depends_on": ["test"], "condition": "always",
                             "env": {"A": "1"}, "priority": 3, "timeout": 600}]
    bad = CliRunner().invoke(main, ["trigger", "deploy", "--env", "novalue"])
    assert bad.exit_code == 78 and "NAME=VALUE" in bad.output


def test_job_file_jobs_run_through_run_job() -> None:
    repo = _repo()
    (repo / "jobs").mkdir()
    (repo / "jobs" / "two-steps.yaml").write_text(
        "name: two-steps\nsteps:\n  - name: first\n    command: echo first-step\n"
        "  - name: second\n    depends_on: [first]\n    command: echo second-step\n")
    text = "name: jf\njobs:\n  j: {job_file: jobs/two-steps.yaml}\n  after: {needs: j, command: echo after}\n"
    lines: list[str] = []
    runner = LocalWorkflowRunner(parse_workflow_text(text, "jf.yaml"), code_dir=repo, registry=SecretRegistry(),
                                 launcher="runnerlib", echo=lines.append)
    result = runner.run()
    assert [n.status for n in result.nodes] == ["success", "success"], "\n".join(lines)
    out = "\n".join(lines)
    assert out.index("first-step") < out.index("second-step")
    shell = LocalWorkflowRunner(parse_workflow_text(text, "jf.yaml"), code_dir=repo, registry=SecretRegistry(),
                                launcher="shell", echo=lines.append).run()
    assert shell.node("j").status == "failed" and "needs the runnerlib launcher" in shell.node("j").reason
    assert shell.node("after").status == "skipped"


def test_cancel_stops_running_jobs_and_starts_no_more() -> None:
    import threading

    text = "name: c\njobs:\n  long: {command: 'echo started; sleep 60'}\n  next: {command: 'true', needs: long}\n"
    lines: list[str] = []
    started = threading.Event()

    def echo(line: str) -> None:
        lines.append(line)
        if line == "[long] started":
            started.set()

    runner = LocalWorkflowRunner(parse_workflow_text(text, "c.yaml"), code_dir=_repo(), registry=SecretRegistry(),
                                 launcher="shell", echo=echo, grace=2.0)
    thread = threading.Thread(target=lambda: setattr(runner, "result", runner.run()))
    thread.start()
    assert started.wait(30)
    runner.cancel()
    thread.join(30)
    assert not thread.is_alive()
    result = runner.result
    assert result.node("long").status == "cancelled" and result.node("long").exit_code == 143
    assert result.node("next").status == "cancelled"


def test_conflicting_vars_fail_the_run() -> None:
    set_var = f"{PY} -c \"import os, runnerlib; runnerlib.workflow_context().set_var('V', os.environ['VAL'])\""
    text = "name: vars\njobs:\n" + "".join(
        f"  {name}:\n    environment: {{VAL: {value}}}\n    command: |\n      {set_var}\n"
        for name, value in (("a", "one"), ("b", "two"), ("c", "one")))
    result, _ = _run(text)
    assert all(n.status == "success" for n in result.nodes)
    assert len(result.errors) == 2 and all("var V was set to different values" in e for e in result.errors)
    assert result.exit_code == 1


def test_a_dependant_starts_only_after_its_dependencies_are_collected(monkeypatch: pytest.MonkeyPatch) -> None:
    """A job's worker sets its status before the loop collects it (outputs, vars, triggers). The clean-clone run
    caught `package` starting (and saying so) while `test[py312]` was set but not yet collected. Here `b`'s worker
    sets its status and then waits, and `a` returns only once `b`'s status is set: `c` must still wait for `b`.
    Control: with the old decision (status only), `c` starts while `b` waits (no timing: `b` waits for that)."""
    import threading

    from runnerlib.workflow import local_runner

    text = ("id: pipeline\nname: order\njobs:\n  a:\n    command: 'true'\n  b:\n    command: 'true'\n"
            "  c:\n    needs: [a, b]\n    command: 'true'\n")
    real = LocalWorkflowRunner._run_node

    def order(patience: float) -> list[str]:
        b_set, c_started = threading.Event(), threading.Event()
        lines: list[str] = []

        def echo(line: str) -> None:
            lines.append(line)
            if line == "▶ c":
                c_started.set()

        def run_node(self: LocalWorkflowRunner, node: object) -> None:
            if node.name == "a":  # type: ignore[attr-defined]
                assert b_set.wait(60)
            real(self, node)
            if node.name == "b":  # type: ignore[attr-defined]
                b_set.set()  # status set, future not done until c starts or `patience` runs out
                c_started.wait(patience)

        monkeypatch.setattr(LocalWorkflowRunner, "_run_node", run_node)
        runner = LocalWorkflowRunner(parse_workflow_text(text, "order.yaml"), code_dir=_repo(),
                                     registry=SecretRegistry(), launcher="shell", echo=echo, max_parallel=3)
        assert runner.run().ok
        return [line[:3] for line in lines if line[:2] in ("▶ ", "✓ ")]

    got = order(1.0)
    assert got.index("✓ b") < got.index("▶ c")
    monkeypatch.setattr(local_runner.LocalWorkflowRunner, "_decide",
                        lambda self, node: "run" if all(self.nodes[d].status in local_runner.state.FINISHED
                                                        for d in node.depends_on) else None)
    got = order(60.0)
    assert got.index("▶ c") < got.index("✓ b")
