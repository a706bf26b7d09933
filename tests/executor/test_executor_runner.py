"""The runner in-process: masking of everything it writes, trusted/untrusted separation, run_job."""

from __future__ import annotations

import base64
import io
import json
import os
import sys
from pathlib import Path

import pytest

from runnerlib.config import get_config
from runnerlib.jobs import Job
from runnerlib.plugins import PluginManager
from runnerlib.runner import JobRunner, run_job

SECRET = "Qx7-secret-Vb93kLmN"
REPO = Path(__file__).resolve().parents[2]


def fragments(secret: str, size: int = 6) -> list[str]:
    return [secret[i:i + size] for i in range(len(secret) - size + 1)]


def assert_no_fragment(text: str, secret: str = SECRET) -> None:
    for frag in fragments(secret):
        assert frag not in text, f"fragment {frag!r} of the secret leaked"


def runner_for(ws: Path, job: Job | None = None, environ: dict | None = None, **settings) -> tuple[JobRunner, io.BytesIO]:  # noqa: ANN003
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    env.update(environ or {})
    config = get_config(environ={}, workspace_root=str(ws), **settings)
    out = io.BytesIO()
    return JobRunner(config, job, plugins=PluginManager(), out=out, environ=env, handle_signals=False), out


def test_secrets_masked_in_console_and_step_log(ws: Path) -> None:
    b64 = base64.b64encode(SECRET.encode()).decode()
    # The secret comes from the environment only (never literally in the command, which is echoed) and
    # is also written in two pieces with a pause between them.
    split = ("python3 -c 'import os,sys,time; s=os.environ[\"DEPLOY_TOKEN\"]; sys.stdout.write(\"split=\"+s[:9]); "
             "sys.stdout.flush(); time.sleep(0.2); sys.stdout.write(s[9:]+\"\\n\")'")
    runner, out = runner_for(
        ws, environ={"DEPLOY_TOKEN": SECRET},
        job_command=f"echo plain=$DEPLOY_TOKEN; echo b64={b64}; echo err=$DEPLOY_TOKEN >&2; {split}")
    assert runner.run() == 0
    console = out.getvalue().decode()
    log = (ws / "artifacts" / "logs" / "job.log").read_text()
    for text in (console, log):
        assert "plain=***" in text and "err=***" in text and "split=***" in text
        assert_no_fragment(text)
        assert b64[4:14] not in text
    summary = json.loads((ws / "artifacts" / "logs" / "summary.json").read_text())
    assert summary["steps"][0]["status"] == "success"


def test_command_echo_and_errors_masked(ws: Path) -> None:
    runner, out = runner_for(ws, secret_values_list=SECRET, job_command=f"no-such-program-{SECRET}")
    code = runner.run()
    text = out.getvalue().decode()
    assert code == 127
    assert "no-such-program-***" in text
    assert_no_fragment(text)


def test_secret_registered_over_the_socket_is_masked(ws: Path) -> None:
    # The value is made inside the step (as a fetched token would be) and kept aside for the test.
    script = ("import os, runnerlib; v = 'fresh-' + os.urandom(8).hex(); "
              f"open({str(ws / 'value')!r}, 'w').write(v); "
              "runnerlib.register_secret(v); print('got', v, flush=True)")
    runner, out = runner_for(ws, job_args=[sys.executable, "-c", script])
    assert runner.run() == 0, out.getvalue().decode()
    fresh = (ws / "value").read_text()
    text = out.getvalue().decode() + (ws / "artifacts" / "logs" / "job.log").read_text()
    assert "got ***" in text
    assert_no_fragment(text, fresh.removeprefix("fresh-"))


PROBE = ("env > {out}/env.txt; "
         "python3 -c 'import os,socket; s=socket.socket(socket.AF_UNIX); "
         "s.connect(os.environ[\"REACTORCIDE_SECRETS_SOCKET\"]); print(\"socket reachable\")' "
         "> {out}/socket.txt 2>&1; true")


def _untrusted_available(result_text: str) -> None:
    if "refused" in result_text and "sandbox" in result_text:
        pytest.skip("the sandbox cannot confine a step on this kernel: " + result_text[-200:])


def test_untrusted_step_gets_no_secret_and_no_socket(ws: Path) -> None:
    # The attack (a PR's build script): dump the environment and connect to the registration socket.
    # It runs once as a trusted step (it must succeed there: this is what the separation prevents)
    # and once as an untrusted step. The files are read raw, unmasked.
    (ws / "src").mkdir()
    (ws / "src" / "t").mkdir()
    (ws / "src" / "u").mkdir()
    os.chmod(ws / "src", 0o777)
    os.chmod(ws / "src" / "u", 0o777)
    job = Job("sep")
    job.add_step("trusted", PROBE.format(out=ws / "src" / "t"))
    # Untrusted steps work on their own copy of src (runnerlib.source.pristine).
    job.add_step("untrusted", PROBE.format(out="$REACTORCIDE_SOURCE_DIR/u"), trust="untrusted")
    runner, out = runner_for(ws, job, environ={"DEPLOY_TOKEN": SECRET},
                             job_env={"API_PASSWORD": "jobenv-pw-77aa", "PLAIN": "visible"})
    code = runner.run()
    text = out.getvalue().decode()
    _untrusted_available(text)
    assert code == 0, text
    trusted_env = (ws / "src" / "t" / "env.txt").read_text()
    assert SECRET in trusted_env and "jobenv-pw-77aa" in trusted_env
    assert "REACTORCIDE_SECRETS_SOCKET=" in trusted_env and "REACTORCIDE_SECRETS_TOKEN=" in trusted_env
    assert "socket reachable" in (ws / "src" / "t" / "socket.txt").read_text()

    untrusted_env = (ws / ".untrusted" / "src" / "u" / "env.txt").read_text()
    assert_no_fragment(untrusted_env)
    assert "jobenv-pw" not in untrusted_env and "PLAIN=visible" in untrusted_env
    assert "REACTORCIDE_SECRETS" not in untrusted_env and "REACTORCIDE_API_TOKEN" not in untrusted_env
    assert "socket reachable" not in (ws / ".untrusted" / "src" / "u" / "socket.txt").read_text()


def test_untrusted_flag_sandboxes_the_job_command(ws: Path) -> None:
    (ws / "src").mkdir()
    os.chmod(ws / "src", 0o777)
    runner, out = runner_for(ws, environ={"DEPLOY_TOKEN": SECRET}, untrusted=True,
                             job_command="env > env.txt")
    code = runner.run()
    _untrusted_available(out.getvalue().decode())
    assert code == 0, out.getvalue().decode()
    assert_no_fragment((ws / ".untrusted" / "src" / "env.txt").read_text())


def test_run_job_from_python(ws: Path) -> None:
    src = ws / "src"
    src.mkdir()
    out = io.BytesIO()
    code = run_job(command="pwd; echo from-run-job", source_dir=str(src), artifacts_dir=str(ws / "artifacts"),
                   workspace_root=str(ws), plugins=PluginManager(), out=out, environ={})
    text = out.getvalue().decode()
    assert code == 0, text
    assert f"[job] {src}" in text and "[job] from-run-job" in text


def test_run_job_config_error_returns_2_masked(ws: Path, capsysbinary: pytest.CaptureFixture) -> None:
    out = io.BytesIO()
    code = run_job(command="true", workspace_root=str(ws), api_token=SECRET, coordinator_url=f"http://{SECRET}",
                   plugins=PluginManager(), out=out, environ={})
    assert code == 78
    text = out.getvalue().decode()
    assert "coordinator_url" in text
    assert_no_fragment(text)


def test_json_log_format(ws: Path) -> None:
    job = Job("j")
    job.add_step("one", "echo first")
    job.add_step("two", "echo second >&2", depends_on=["one"])
    runner, out = runner_for(ws, job, log_format="json", job_id="job-77")
    assert runner.run() == 0
    records = [json.loads(line) for line in out.getvalue().decode().splitlines() if line.startswith("{")]
    outputs = [r for r in records if r.get("stream") in ("stdout", "stderr")]
    assert {(r["step"], r["stream"], r["message"]) for r in outputs} == {("one", "stdout", "first"),
                                                                       ("two", "stderr", "second")}
    assert all(r["job_id"] == "job-77" for r in outputs)
    summary = [r for r in records if r.get("stream") == "summary"][0]
    assert [s["name"] for s in summary["steps"]] == ["one", "two"] and summary["exit_code"] == 0


def test_dry_run_runs_nothing(ws: Path) -> None:
    runner, out = runner_for(ws, job_command=f"touch {ws}/ran", dry_run=True)
    assert runner.run() == 0
    assert not (ws / "ran").exists()
    assert b"dry run" in out.getvalue()


def test_container_mode_without_an_engine_fails_clearly(ws: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "no-engines"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    runner, out = runner_for(ws, job_command="true", runner_image="alpine:latest")
    assert runner.run() == 78
    assert b"container mode needs a container engine" in out.getvalue()


def test_interleaved_steps_never_mix_inside_a_line(ws: Path) -> None:
    script = ("import sys\n"
              "for i in range(2000):\n"
              "    sys.stdout.write('{c}' * 50 + '\\n'); sys.stdout.flush()\n")
    job = Job("mix")
    for name, char in (("aa", "A"), ("bb", "B"), ("cc", "C")):
        job.add_step(name, [sys.executable, "-c", script.format(c=char)])
    runner, out = runner_for(ws, job, concurrency=3)
    assert runner.run() == 0
    lines = [line for line in out.getvalue().decode().splitlines() if line.startswith(("[aa]", "[bb]", "[cc]"))]
    assert len(lines) == 6000
    for line in lines:
        prefix, _, body = line.partition(" ")
        assert body == {"[aa]": "A", "[bb]": "B", "[cc]": "C"}[prefix] * 50


def test_job_file_from_the_source_tree_cannot_declare_trusted_steps(ws: Path) -> None:
    # The attack: a pull request edits the job file the worker runs (it lives in /job/src) so that its own
    # command runs as a trusted step, with the secrets.
    from runnerlib.config import load_job_file

    src = ws / "src"
    src.mkdir()
    job_file = src / "job.yaml"
    job_file.write_text(f"steps:\n  - name: steal\n    command: env > {ws}/stolen.txt\n")
    _layer, job, _doc = load_job_file(job_file)
    runner, out = runner_for(ws, job, environ={"DEPLOY_TOKEN": SECRET})
    assert runner.run() == 78
    assert b"untrusted source tree" in out.getvalue()
    assert not (ws / "stolen.txt").exists()

    # The same file kept in the CI tree is trusted configuration and runs with the secrets: the refusal
    # above is what stopped the theft.
    ci = ws / "ci"
    ci.mkdir()
    (ci / "job.yaml").write_text(job_file.read_text())
    _layer, job, _doc = load_job_file(ci / "job.yaml")
    runner, out = runner_for(ws, job, environ={"DEPLOY_TOKEN": SECRET})
    assert runner.run() == 0
    assert SECRET in (ws / "stolen.txt").read_text()


def test_untrusted_flag_sandboxes_every_step_of_a_source_tree_job_file(ws: Path) -> None:
    from runnerlib.config import load_job_file

    src = ws / "src"
    src.mkdir()
    os.chmod(src, 0o777)
    job_file = src / "job.yaml"
    job_file.write_text("steps:\n  - name: steal\n    command: env > stolen.txt\n")
    _layer, job, _doc = load_job_file(job_file)
    runner, out = runner_for(ws, job, environ={"DEPLOY_TOKEN": SECRET}, untrusted=True)
    code = runner.run()
    _untrusted_available(out.getvalue().decode())
    assert code == 0, out.getvalue().decode()
    assert_no_fragment((ws / ".untrusted" / "src" / "stolen.txt").read_text())


ADVANCED = """
import sys
import runnerlib
from runnerlib.plugins import Plugin, PluginPhase

class Report(Plugin):
    def __init__(self):
        super().__init__("report", priority=50)

    def supported_phases(self):
        return [PluginPhase.PRE_EXECUTION, PluginPhase.POST_EXECUTION]

    def pre_execution(self, context):
        print("plugin: before", flush=True)

    def post_execution(self, context):
        print("plugin: after, exit", context.exit_code, flush=True)

runnerlib.register_plugin(Report())
sys.exit(runnerlib.run_job(command="echo inner-step $DEPLOY_TOKEN", source_dir=SRC))
"""


def test_advanced_mode_script_registers_plugins_and_runs_a_job(ws: Path) -> None:
    # A trusted script (the design document's advanced mode) run as the job's step: it imports runnerlib,
    # registers a plugin and runs its own job; the nested runner masks too.
    (ws / "src").mkdir()
    script = ws / "pipeline.py"
    script.write_text(f"SRC = {str(ws / 'src')!r}\n" + ADVANCED)
    runner, out = runner_for(ws, job_args=[sys.executable, str(script)], environ={"DEPLOY_TOKEN": SECRET})
    code = runner.run()
    text = out.getvalue().decode()
    assert code == 0, text
    assert "plugin: before" in text and "plugin: after, exit 0" in text and "inner-step ***" in text
    assert_no_fragment(text)
    # The nested job's logs sit beside the outer step's log instead of overwriting it.
    logs = ws / "artifacts" / "logs"
    assert "inner-step ***" in (logs / "job.nested" / "job.log").read_text()
    assert "plugin: before" in (logs / "job.log").read_text()
    assert text.count('"reactorcide_trigger_key"') == 1  # one signing key: the outer runner's


def test_untrusted_step_env_never_carries_a_secret(ws: Path) -> None:
    src = ws / "src"
    src.mkdir()
    os.chmod(src, 0o777)
    job = Job("j")
    # The same step definition, trusted and untrusted: only the trust level differs.
    for name, trust in (("t", "trusted"), ("u", "untrusted")):
        job.add_step(name, f"echo $API_TOKEN/$HOLDS/$PLAIN > $REACTORCIDE_SOURCE_DIR/{name}.txt", trust=trust,  # type: ignore[arg-type]
                     env={"API_TOKEN": "step-token-4455", "HOLDS": f"x{SECRET}x", "PLAIN": "fine"})
    runner, out = runner_for(ws, job, environ={"DEPLOY_TOKEN": SECRET})
    code = runner.run()
    text = out.getvalue().decode()
    _untrusted_available(text)
    assert code == 0, text
    assert (src / "t.txt").read_text() == f"step-token-4455/x{SECRET}x/fine\n"
    assert (ws / ".untrusted" / "src" / "u.txt").read_text() == "//fine\n"
    assert "not given to this untrusted step (secret): API_TOKEN, HOLDS" in text


@pytest.mark.parametrize("configured", [[], ["configured-secret-value-0123456789"]])
def test_the_socket_tokens_are_compiled_with_the_start_up_secrets(ws: Path, monkeypatch, configured) -> None:  # noqa: ANN001
    """The secrets socket's tokens join the configuration's secrets in one compilation at start. Registered on
    their own after it, they were a delta layer that a merge thread then compiled again with everything else,
    beside the first step (schedule_merge was called once per job). The token a step prints is masked."""
    from runnerlib.security import masker

    merges: list[int] = []
    monkeypatch.setattr(masker.Masker, "_schedule_merge", lambda self, force=False: merges.append(1))
    runner, out = runner_for(ws, job_command='echo "token=$REACTORCIDE_SECRETS_TOKEN"',
                             secret_values_list=configured)
    assert runner.run() == 0
    console = out.getvalue().decode()
    assert "token=***" in console and merges == []
    assert_no_fragment(console, runner._socket_server.token)
