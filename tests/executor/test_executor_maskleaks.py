"""Leaks found by trying runnerlib as a user would (issue 12), each with the protection off as a control:
a trusted step's own env: block, `runnerlib config` printing URL credentials given by option or file, a
numeric secret in workflow-output.json, and credentials of well-known formats that nobody registered."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

from runnerlib.config import get_config, load_job_file
from runnerlib.plugins import PluginManager
from runnerlib.runner import JobRunner
from runnerlib.security import secret_sources
from runnerlib.security.registry import SecretRegistry

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
from test_executor_cli import cli  # noqa: E402

PASSWORD = "Zq8-step-env-Pw417"
URL_PW = "u7K-url-pw-93Lm"
GH = "ghp_" + "Ab3De6Gh9Jk2Mn5Pq8St1Vw4Yz7Bc0Ef3Hi6"


def _no_fragment(text: str, secret: str, size: int = 6) -> None:
    for i in range(len(secret) - size + 1):
        assert secret[i:i + size] not in text, f"bytes {i}..{i + size} of a secret leaked"


def _run_job_file(ws: Path, body: str) -> str:
    path = ws / "job.yaml"
    path.write_text(body)
    layer, job, _doc = load_job_file(path)
    config = get_config(environ={}, job_file=layer, workspace_root=str(ws))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = io.BytesIO()
    runner = JobRunner(config, job, plugins=PluginManager(), out=out, environ=env, handle_signals=False)
    assert runner.run() == 0, out.getvalue().decode()
    logs = ws / "artifacts" / "logs"
    return out.getvalue().decode() + "".join(p.read_text() for p in sorted(logs.glob("*.log")))


STEP_ENV_JOB = f"""\
steps:
  - name: first
    command: 'echo "first sees nothing"'
  - name: deploy
    depends_on: [first]
    env:
      DB_PASSWORD: {PASSWORD}
      DATABASE_URL: postgres://app:{URL_PW}@db:5432/app
    command: 'echo "pw=$DB_PASSWORD url=$DATABASE_URL"'
"""


def test_trusted_step_own_env_secrets_are_masked(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = _run_job_file(ws, STEP_ENV_JOB)
    assert "pw=*** url=postgres://***@db:5432/app" in text
    _no_fragment(text, PASSWORD)
    _no_fragment(text, URL_PW)
    # Protection off: without registering the step's env block, the trusted step prints it in clear.
    monkeypatch.setattr(secret_sources, "load_step_env_secrets", lambda *a, **k: [])
    (ws / "artifacts").rename(ws / "artifacts-on")
    assert PASSWORD in _run_job_file(ws, STEP_ENV_JOB)


KNOWN_JOB = f"""\
steps:
  - name: leaky
    command: 'echo "token {GH}"; echo "again {GH}" >&2; echo "key AKIAQWERTYUIOPASDFGH"'
"""


def test_known_formats_masked_in_a_job_with_one_notice_per_format(ws: Path) -> None:
    text = _run_job_file(ws, KNOWN_JOB)
    assert "token ***" in text and "again ***" in text and "key ***" in text
    _no_fragment(text, GH[4:])
    assert "AKIAQWERTYUIOPASDFGH" not in text
    # One notice per format per step, though the token came on stdout and on stderr.
    assert text.count("masked a GitHub token (known format)") == 1
    assert text.count("masked an AWS access key id (known format)") == 1
    # Protection off by the job file's own key: the same output in clear, no notice.
    (ws / "artifacts").rename(ws / "artifacts-on")
    off = _run_job_file(ws, "mask_known_formats: false\n" + KNOWN_JOB)
    assert f"token {GH}" in off and "known format" not in off


def test_no_known_formats_option_of_run_and_run_job(ws: Path) -> None:
    script = f"print('t {GH}')"
    on = cli("run", "--workspace-root", str(ws), "--", sys.executable, "-c", script)
    assert on.returncode == 0 and GH.encode() not in on.stdout + on.stderr and b"t ***" in on.stdout
    off = cli("run", "--no-known-formats", "--workspace-root", str(ws), "--", sys.executable, "-c", script)
    assert off.returncode == 0 and GH.encode() in off.stdout
    job = ws / "job.yaml"
    job.write_text(f"steps:\n  - name: s\n    command: 'echo t {GH}'\n")
    on = cli("run-job", str(job), "--workspace-root", str(ws))
    assert on.returncode == 0 and GH.encode() not in on.stdout + on.stderr and b"t ***" in on.stdout
    off = cli("run-job", "--no-known-formats", str(job), "--workspace-root", str(ws))
    assert off.returncode == 0 and GH.encode() in off.stdout


def test_runner_log_lines_mask_known_formats(ws: Path) -> None:
    runner = JobRunner(get_config(environ={}, workspace_root=str(ws), job_command="true"), None,
                       plugins=PluginManager(), out=io.BytesIO(), environ={}, handle_signals=False)
    assert runner.mask_text(f"error: push to https://x/?private_token=abcdefgh123 with {GH}") == \
        "error: push to https://x/?private_token=*** with ***"


@pytest.mark.parametrize("how", ["option", "file", "env"])
def test_config_never_prints_url_credentials(ws: Path, how: str) -> None:
    url = f"https://deploy:{URL_PW}@git.example.com/app.git?access_token=tok-{URL_PW}"
    env: dict[str, str] = {}
    if how == "option":
        args = ["--git-url", url]
    elif how == "file":
        (ws / "job.yaml").write_text(f"git_url: '{url}'\n")
        args = ["--config-file", str(ws / "job.yaml")]
    else:
        args, env = [], {"REACTORCIDE_GIT_URL": url}
    for extra in ([], ["--json"]):
        r = cli("config", *args, *extra, env=env)
        assert r.returncode == 0, r.stderr
        out = r.stdout.decode()
        assert "https://***@git.example.com/app.git?access_token=***" in out
        _no_fragment(out + r.stderr.decode(), URL_PW)
    # Protection off: the registry `config` used to mask with (secrets of the environment) does not know a
    # URL given by option or file, so it printed it as is.
    registry = SecretRegistry()
    secret_sources.load_secrets(registry, environ={})
    assert registry.mask_text(url) == url


def test_numeric_output_is_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runnerlib.workflow import api

    env = {"REACTORCIDE_WORKFLOW_OUTPUT": str(tmp_path / "out.json"), "PIN_PASSWORD": "48151623"}
    ctx = api.workflow_context(environ=env)
    ctx.set_output("pin", 48151623)
    ctx.set_output("nested", {"codes": [48151623, 7, 2.5, True, None], "ok": 1234})
    ctx.set_output("count", 3)
    text = (tmp_path / "out.json").read_text()
    assert "48151623" not in text and "4815" not in text and "1623" not in text
    assert json.loads(text)["outputs"] == {"pin": "***", "nested": {"codes": ["***", 7, 2.5, True, None],
                                                                     "ok": 1234}, "count": 3}
    # Protection off: masking only strings writes the number in clear.
    monkeypatch.setattr(api, "_numbers_as_text", lambda value: value)
    api.workflow_context(environ={**env, "REACTORCIDE_WORKFLOW_OUTPUT": str(tmp_path / "off.json")}).set_output(
        "pin", 48151623)
    assert "48151623" in (tmp_path / "off.json").read_text()
