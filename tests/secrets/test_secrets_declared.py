"""Least privilege for trusted steps (issue 11): with a job's `secrets: declared`, a trusted step gets only the
secret variables its `secrets:` lists, and registers over the socket only with `register_secrets: true`.
Every secret of the job is still masked everywhere. Each attack has its control: the same job with
`secrets: all` (today's default), where the step reaches everything."""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runnerlib.config import get_config, load_job_file
from runnerlib.jobs import Job, JobDefinitionError
from runnerlib.plugins import PluginManager
from runnerlib.runner import JobRunner
from runnerlib.testing import reachable_tempdir

REPO = Path(__file__).resolve().parents[2]
DEPLOY = "deploy-secret-Hq72LmZx"
NPM = "npm-secret-Pw19RtYc"
LATE = "registered-late-Vn55Kd"
PROBE = (f"env > {{out}}/env.txt; {sys.executable} -c \"from runnerlib import secrets_client as c\n"
         "try:\n    c.register_secret('" + LATE + "'); print('registered')\n"
         "except Exception as e: print('refused:', e)\n"
         "print('masked:', c.mask_text('a " + NPM + " b'))\" > {out}/socket.txt 2>&1")


def _run(mode: str, *, register: bool = False) -> tuple[int, str, dict[str, str]]:
    with reachable_tempdir("rl-declared-") as ws:
        for name in ("deploy", "lint"):
            (ws / name).mkdir()
        job = Job("least", secrets=mode)
        job.add_step("deploy", PROBE.format(out=ws / "deploy"), secrets=["DEPLOY_TOKEN"], register_secrets=register)
        job.add_step("lint", PROBE.format(out=ws / "lint"), depends_on=["deploy"])
        job.add_step("late", f"echo {LATE}; cat {ws}/deploy/env.txt | grep -c NPM_TOKEN= ; echo {NPM}",
                     depends_on=["lint"])
        env = dict(os.environ, PYTHONPATH=str(REPO), DEPLOY_TOKEN=DEPLOY, NPM_TOKEN=NPM)
        out = io.BytesIO()
        config = get_config(environ={}, workspace_root=str(ws / "w"))
        code = JobRunner(config, job, plugins=PluginManager(), out=out, environ=env, handle_signals=False).run()
        files = {f"{step}/{name}": (ws / step / name).read_text()
                 for step in ("deploy", "lint") for name in ("env.txt", "socket.txt")}
        return code, out.getvalue().decode(), files


def test_declared_steps_get_only_their_secrets() -> None:
    code, text, files = _run("declared")
    assert code == 0, text
    assert f"DEPLOY_TOKEN={DEPLOY}" in files["deploy/env.txt"] and NPM not in files["deploy/env.txt"]
    assert DEPLOY not in files["lint/env.txt"] and NPM not in files["lint/env.txt"]
    assert "NPM_TOKEN" not in files["deploy/env.txt"] + files["lint/env.txt"]
    # No registration without register_secrets: true; masking over the socket still works, with every secret.
    for step in ("deploy", "lint"):
        assert "refused: " in files[f"{step}/socket.txt"] and "may not register" in files[f"{step}/socket.txt"]
        assert "masked: a *** b" in files[f"{step}/socket.txt"]
    # Every secret of the job is still masked, though no step had NPM_TOKEN in its environment.
    assert NPM not in text and DEPLOY not in text and "[late] ***" in text, text
    assert f"[late] {LATE}" in text  # control for the socket: the refused value was indeed not registered


def test_control_all_mode_gives_every_trusted_step_everything() -> None:
    code, text, files = _run("all")
    assert code == 0, text
    assert NPM in files["deploy/env.txt"] and DEPLOY in files["lint/env.txt"] and NPM in files["lint/env.txt"]
    assert "registered" in files["lint/socket.txt"] and "refused" not in files["lint/socket.txt"]
    assert LATE not in re.split(r"==> \S+ \[late\]", text, maxsplit=1)[1] and "[late] ***" in text, text


def test_register_secrets_true_may_register() -> None:
    code, text, files = _run("declared", register=True)
    assert code == 0, text
    assert files["deploy/socket.txt"].startswith("registered") and "refused" in files["lint/socket.txt"]
    assert LATE not in re.split(r"==> \S+ \[late\]", text, maxsplit=1)[1] and "[late] ***" in text, text


def test_job_file_keys(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("secrets: declared\nsteps:\n  - name: deploy\n    command: ./deploy\n"
                    "    secrets: [DEPLOY_TOKEN]\n    register_secrets: true\n  - name: lint\n    command: make\n")
    _layer, job, _doc = load_job_file(path)
    assert job is not None and job.secrets == "declared"
    assert [(s.secrets, s.register_secrets) for s in job.steps] == [(["DEPLOY_TOKEN"], True), (None, False)]


@pytest.mark.parametrize("text, rule", [
    ("secrets: some\nsteps:\n  - {name: a, command: x}\n", "secrets: must be 'all' or 'declared'"),
    ("secrets: declared\njob_command: x\n", "secrets: applies to the steps"),
    ("steps:\n  - {name: a, command: x, secrets: [1BAD]}\n", "step 'a': secrets: '1BAD' is not a valid"),
    ("steps:\n  - {name: a, command: x, trust: untrusted, secrets: [T]}\n", "an untrusted step gets no secrets"),
    ("steps:\n  - {name: a, command: x, trust: untrusted, register_secrets: true}\n", "an untrusted step"),
])
def test_job_file_errors_name_the_field(tmp_path: Path, text: str, rule: str) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    with pytest.raises(JobDefinitionError, match=rule.replace("(", r"\(").replace(".", r"\.")):
        load_job_file(path)


NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)


@settings(max_examples=80, deadline=None)
@given(st.lists(NAME, max_size=5), st.text(max_size=8))
def test_secrets_field_accepts_names_and_refuses_the_rest(names: list[str], junk: str) -> None:
    job = Job("p", secrets="declared")
    assert job.add_step("a", "x", secrets=names).secrets == names
    import re

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", junk):
        with pytest.raises(JobDefinitionError, match="secrets"):
            job.add_step("b", "x", secrets=[*names, junk])


def test_withhold_undeclared_never_keeps_an_undeclared_secret() -> None:
    from runnerlib.execution.least_privilege import withhold_undeclared

    env = {"A_TOKEN": "1", "HOLDS": f"x{DEPLOY}", "PATH": "/bin", "B_KEY": "2"}
    kept, withheld, missing = withhold_undeclared(env, ["B_KEY", "C"], lambda k, v: k != "PATH")
    assert kept == {"PATH": "/bin", "B_KEY": "2"} and withheld == ["A_TOKEN", "HOLDS"] and missing == ["C"]


def test_the_socket_accepts_the_mask_only_token_for_masking_only(tmp_path: Path) -> None:
    from runnerlib import secrets_client
    from runnerlib.security.registry import SecretRegistry
    from runnerlib.security.secret_socket import SecretSocketServer

    registry = SecretRegistry()
    registry.add(NPM, source="test")
    server = SecretSocketServer(registry, parent_dir=tmp_path).start()
    try:
        limited = server.env(register=False)
        path, token = limited["REACTORCIDE_SECRETS_SOCKET"], limited["REACTORCIDE_SECRETS_TOKEN"]
        assert token != server.token and server.env()["REACTORCIDE_SECRETS_TOKEN"] == server.token
        with pytest.raises(secrets_client.RegistrationError, match="may not register"):
            secrets_client.register_secret(LATE, socket_path=path, token=token)
        assert LATE.encode() not in registry.secrets()
        assert secrets_client.mask_text(f"x {NPM}", socket_path=path, token=token) == "x ***"
        # Control: the job's full token registers the same value.
        secrets_client.register_secret(LATE, socket_path=path, token=server.token)
        assert LATE.encode() in registry.secrets()
        # Both tokens are secrets of the job: masked wherever they appear.
        assert registry.mask_text(token + " " + server.token) == "*** ***"
    finally:
        server.stop()
