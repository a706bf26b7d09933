"""Issue 11, case 8: runnerlib's own files never lie where untrusted steps write, and files from the untrusted
tree never configure a trusted step.

- REACTORCIDE_TRIGGERS_FILE (and --work-dir) pointing into a tree untrusted steps write is refused with one
  line, so an untrusted step's forged trigger is never signed and published (control: the same job with the
  check switched off publishes the forgery);
- as root, the same for a directory the sandbox uid may write (control: a root-owned one is accepted);
- summary.json is replaced, never written through what a step left at its name (control: the plain write);
- `run --config-file src/x.yaml` and `run --job J --workflow-file src/...` are refused as `run-job src/job.yaml`
  is (control: the same files in the CI tree run, with the secret).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runnerlib.config import ConfigError, get_config
from runnerlib.jobs import Job
from runnerlib.plugins import PluginManager
from runnerlib.runner import JobRunner
from runnerlib.security.out_of_reach import untrusted_reach

REPO = Path(__file__).resolve().parents[2]
SECRET = "boundary-secret-Wq31xZ"
FORGED = ('{"type": "trigger_job", "operation_id": "' + str(uuid.uuid4()) + '", "trigger_type": "runnerlib", '
          '"jobs": [{"job_name": "deploy-prod"}]}')


def _run(ws: Path, job: Job, environ: dict[str, str] | None = None, **settings: object) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = io.BytesIO()
    config = get_config(environ=environ or {}, workspace_root=str(ws), **settings)
    code = JobRunner(config, job, plugins=PluginManager(), out=out, environ=env, handle_signals=False).run()
    return code, out.getvalue().decode()


def _forging_job(target: Path | None = None) -> Job:
    """An untrusted step writing a forged trigger where the triggers file is said to be."""
    job = Job("forge")
    where = "/dev/null" if target is None else str(target)
    job.add_step("pr-build", f"printf '%s' '{FORGED}' > {where}", trust="untrusted")
    return job


def test_triggers_file_in_the_artifacts_is_refused(ws: Path) -> None:
    triggers = ws / "artifacts" / "triggers.json"
    code, text = _run(ws, _forging_job(triggers), environ={"REACTORCIDE_TRIGGERS_FILE": str(triggers)})
    assert code == 78, text
    assert ("config: triggers_file (from env REACTORCIDE_TRIGGERS_FILE): must lie where untrusted steps cannot "
            f"write, but it lies in {ws}/artifacts") in text, text
    assert not triggers.exists() and "deploy-prod" not in text and "published" not in text


def test_control_without_the_check_the_forged_trigger_is_published(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(JobRunner, "_check_out_of_reach", lambda self: None)
    triggers = ws / "artifacts" / "t.json"
    code, text = _run(ws, _forging_job(triggers), environ={"REACTORCIDE_TRIGGERS_FILE": str(triggers)})
    if "refused" in text and "sandbox" in text:
        pytest.skip("the sandbox cannot confine a step on this kernel")
    assert code == 0 and "triggers: 1 job(s) in 1 operation(s) published" in text and "deploy-prod" in text, text


def test_the_default_triggers_file_is_out_of_reach(ws: Path) -> None:
    code, text = _run(ws, _forging_job(ws / "triggers.json"))
    if "refused" in text and "sandbox" in text:
        pytest.skip("the sandbox cannot confine a step on this kernel")
    assert code != 0 and "published" not in text and not (ws / "triggers.json").exists(), text


@pytest.mark.parametrize("where", ["src/t.json", ".untrusted/t.json", "src/deep/er/t.json"])
def test_triggers_file_in_the_source_trees_is_refused(ws: Path, where: str) -> None:
    code, text = _run(ws, _forging_job(), triggers_file=str(ws / where))
    assert code == 78 and "triggers_file" in text and "untrusted steps can write" in text, text


@pytest.mark.parametrize("where", ["artifacts/work", "src/work", ""])
def test_work_dir_in_or_around_an_untrusted_tree_is_refused(ws: Path, where: str) -> None:
    code, text = _run(ws, _forging_job(), work_dir=str(ws / where) if where else str(ws))
    assert code == 78 and "config: work_dir" in text and "untrusted steps can write" in text, text


def test_a_trusted_only_job_is_checked_too(ws: Path) -> None:
    """A trusted script may start untrusted code itself (run_untrusted): the step list does not tell."""
    job = Job("trusted")
    job.add_step("a", "true")
    code, text = _run(ws, job, triggers_file=str(ws / "artifacts" / "t.json"))
    assert code == 78 and "config: triggers_file" in text, text
    code, text = _run(ws, job)  # control: the default place
    assert code == 0, text


def test_reach_by_path_rule(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    os.symlink(src / "a", tmp_path / "link")
    assert untrusted_reach(str(tmp_path / "link" / "t.json"), trees=[str(src)]) is not None  # resolved path
    assert untrusted_reach(str(tmp_path / "ci" / "t.json"), trees=[str(src)]) is None
    assert untrusted_reach(str(tmp_path / "srcx" / "t.json"), trees=[str(src)]) is None  # a prefix is not inside
    assert untrusted_reach(str(tmp_path), trees=[str(src)], directory=True) is not None
    assert untrusted_reach(str(tmp_path), trees=[str(src)]) is None


PART = st.sampled_from(["src", "srcx", "src.d", "..", ".", "a", "artifacts", "ci", ".untrusted", "x/../src"])


@settings(max_examples=200, deadline=None)
@given(st.lists(PART, min_size=1, max_size=6))
def test_reach_by_path_matches_the_resolved_path(parts: list[str]) -> None:
    """Property: refused exactly when the resolved path is one of the trees or beneath one (never a mere
    string prefix such as srcx, never fooled by `..`)."""
    root = "/nonexistent-ws"
    trees = [f"{root}/src", f"{root}/artifacts"]
    path = os.path.join(root, *parts)
    real = os.path.realpath(path)
    inside = any(real == t or real.startswith(t + "/") for t in trees)
    assert (untrusted_reach(path, trees=trees) is not None) == inside


@pytest.mark.root
def test_root_refuses_a_directory_the_sandbox_uid_may_write(ws: Path) -> None:
    spool = ws / "spool"
    spool.mkdir()
    os.chown(spool, 65534, 65534)
    code, text = _run(ws, _forging_job(), triggers_file=str(spool / "t.json"))
    assert code == 78 and f"uid 65534 may create {spool}/t.json" in text, text
    # Control: the same directory given to root is accepted.
    os.chown(spool, 0, 0)
    assert untrusted_reach(str(spool / "t.json"), trees=[], sandbox=(65534, 65534)) is None


@pytest.mark.root
def test_root_reach_rules(tmp_path: Path) -> None:
    base = tmp_path / "b"
    base.mkdir()
    os.chmod(tmp_path, 0o755)
    sticky = base / "sticky"
    sticky.mkdir(mode=0o1777)
    os.chmod(sticky, 0o1777)
    (sticky / "mine").mkdir()
    assert untrusted_reach(str(sticky / "mine" / "t"), trees=[], sandbox=(65534, 65534)) is None
    (sticky / "theirs").mkdir()
    os.chown(sticky / "theirs", 65534, 65534)
    assert "may replace" in (untrusted_reach(str(sticky / "theirs" / "t"), trees=[], sandbox=(65534, 65534)) or "")
    os.chmod(sticky, 0o777)
    assert "may replace" in (untrusted_reach(str(sticky / "mine" / "t"), trees=[], sandbox=(65534, 65534)) or "")
    work = base / "work"
    (work / "inner").mkdir(parents=True)
    (work / "inner" / "f").write_text("x")
    os.chown(work / "inner" / "f", 65534, 0)
    assert "may write" in (untrusted_reach(str(work), trees=[], sandbox=(65534, 65534), directory=True) or "")


@pytest.mark.root
def test_root_refuses_a_logs_dir_the_sandbox_uid_owns(ws: Path) -> None:
    logs = ws / "artifacts" / "logs"
    logs.mkdir(parents=True)
    os.chown(logs, 65534, 65534)
    code, text = _run(ws, _forging_job())
    assert code == 1 and "the logs directory" in text and "uid 65534 may replace" in text, text


def test_summary_json_replaces_what_a_step_left(ws: Path) -> None:
    """The attack: summary.json hard-linked to another file (or left read-only with forged content)."""
    from runnerlib.security.paths import Workspace

    logs = ws / "artifacts" / "logs"
    logs.mkdir(parents=True)
    victim = ws / "artifacts" / "victim.txt"
    victim.write_text("keep me")
    os.link(victim, logs / "summary.json")
    job = Job("summary")
    job.add_step("a", "true")
    code, text = _run(ws, job)
    assert code == 0 and victim.read_text() == "keep me", text
    assert '"status": "success"' in (logs / "summary.json").read_text()
    # Control: a plain write through the name (what the runner did before) rewrites the victim.
    os.unlink(logs / "summary.json")
    os.link(victim, logs / "summary.json")
    with Workspace(str(ws)) as workspace:
        workspace.write_text(str(logs / "summary.json"), "{}")
    assert victim.read_text() == "{}"


# --- files from the untrusted tree: --config-file, --workflow-file ----------------------------------------


def _cli(*args: str, ws: Path) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REACTORCIDE_")}
    env.update(DEPLOY_TOKEN=SECRET, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "runnerlib.cli", *args, "--workspace-root", str(ws)],
                          env=env, cwd=REPO, capture_output=True, timeout=60)


def _plant(tree: Path, ws: Path) -> None:
    steal = f"env > {ws}/stolen-$$.txt"
    (tree / ".reactorcide" / "workflows").mkdir(parents=True)
    (tree / "x.yaml").write_text(f"job_command: '{steal}'\n")
    (tree / ".reactorcide" / "workflows" / "ci.yaml").write_text(
        f"name: ci\njobs:\n  steal:\n    command: '{steal}'\n")


def _stolen(ws: Path) -> bool:
    return any(SECRET in p.read_text() for p in ws.glob("stolen-*.txt"))


@pytest.mark.parametrize("option", ["--config-file", "--workflow-file"])
def test_files_from_the_source_tree_are_refused(ws: Path, option: str) -> None:
    _plant(ws / "src", ws)
    args = ["--config-file", str(ws / "src" / "x.yaml")] if option == "--config-file" else \
        ["--job", "steal", "--workflow-file", str(ws / "src" / ".reactorcide" / "workflows" / "ci.yaml")]
    r = _cli("run", *args, ws=ws)
    assert r.returncode == 78, r.stdout + r.stderr
    assert f"{option} lies in {ws}/src".encode() in r.stderr and b"may not be trusted" in r.stderr, r.stderr
    assert not _stolen(ws)
    # Control: the same files from the CI tree are trusted configuration and run with the secret.
    _plant(ws / "ci", ws)
    args = [a.replace(f"{ws}/src", f"{ws}/ci") for a in args]
    r = _cli("run", *args, ws=ws)
    assert r.returncode == 0 and _stolen(ws), r.stdout + r.stderr


def test_a_config_file_from_the_artifacts_is_refused(ws: Path) -> None:
    """A trusted step that runs `runnerlib run --config-file $ARTIFACTS/x.yaml` would run what a step left."""
    (ws / "artifacts").mkdir()
    (ws / "artifacts" / "x.yaml").write_text("job_command: 'true'\n")
    r = _cli("run", "--config-file", str(ws / "artifacts" / "x.yaml"), ws=ws)
    assert r.returncode == 78 and b"--config-file lies in" in r.stderr, r.stderr


def test_untrusted_flag_runs_a_source_tree_config_file_sandboxed(ws: Path) -> None:
    _plant(ws / "src", ws)
    r = _cli("run", "--untrusted", "--config-file", str(ws / "src" / "x.yaml"), ws=ws)
    assert b"may not be trusted" not in r.stderr and not _stolen(ws), r.stdout + r.stderr


def test_check_job_origin_without_files_still_checks_the_job_file(ws: Path) -> None:
    from runnerlib.runner import check_job_origin

    job = Job("j")
    job.add_step("a", "true")
    job.source_file = ws / "src" / "job.yaml"
    with pytest.raises(ConfigError, match="the job file lies in"):
        check_job_origin(job, get_config(environ={}, workspace_root=str(ws)))


def test_a_source_tree_file_cannot_move_the_trees_away_from_itself(ws: Path) -> None:
    """The attack: with the default workspace (/job), /job/src/x.yaml sets workspace_root elsewhere, so that by
    the final configuration /job/src no longer looks untrusted. `_load` also checks against the trees of the
    configuration without the file (here: ws plays /job, as the defaults would give it)."""
    from runnerlib.config import load_job_file
    from runnerlib.runner import simple_job
    from runnerlib.trust_origin import check_job_origin, untrusted_trees

    (ws / "src").mkdir()
    other = ws.parent / f"{ws.name}-elsewhere"
    path = ws / "src" / "x.yaml"
    path.write_text(f"workspace_root: {other}\njob_command: 'env > {ws}/stolen-1.txt'\n")
    layer, _job, _doc = load_job_file(path)
    config = get_config(job_file=layer, environ={}, check_paths=False)
    assert config.workspace_root == str(other)
    from runnerlib.trust_origin import layout_without_files

    base = layout_without_files({"workspace_root": (str(ws), "--workspace-root")}, {}, environ={})
    # With nothing set, the defaults decide (/job/src); a rule that needs a file's settings hides nothing.
    assert "/job/src" in untrusted_trees(layout_without_files({}, {}, environ={"REACTORCIDE_SOURCE_URL": "x"}))
    # Control: judged by the final configuration alone, the file passes and its command would run trusted.
    check_job_origin(simple_job(config), config, {"--config-file": str(path)})
    with pytest.raises(ConfigError, match="--config-file lies in .*may not be trusted"):
        check_job_origin(simple_job(config), config, {"--config-file": str(path)}, extra_trees=untrusted_trees(base))


@pytest.mark.parametrize("setting", ["ci_source_type: copy\nci_source_url: /etc", "plugin_dirs: [{ws}/ci/p]",
                                     "coordinator_url: https://collector.invalid", "triggers_file: {ws}/t.json",
                                     "secrets_file: /etc/hostname", "source_type: copy\nsource_url: /root"])
def test_a_source_tree_file_sets_no_runner_setting_even_untrusted(ws: Path, setting: str) -> None:
    (ws / "src").mkdir()
    (ws / "src" / "x.yaml").write_text(setting.format(ws=ws) + "\njob_command: 'true'\n")
    r = _cli("run", "--untrusted", "--config-file", str(ws / "src" / "x.yaml"), ws=ws)
    field = setting.split(":", 1)[0]
    assert r.returncode == 78, r.stdout + r.stderr
    assert f"config: {field} (from {ws}/src/x.yaml:".encode() in r.stderr and b"may set only" in r.stderr, r.stderr


def test_control_the_same_settings_from_the_ci_tree_are_taken(ws: Path) -> None:
    (ws / "ci").mkdir()
    (ws / "ci" / "x.yaml").write_text("plugin_dirs: []\nstep_retries: 0\njob_command: 'echo from-ci'\n")
    r = _cli("run", "--untrusted", "--config-file", str(ws / "ci" / "x.yaml"), ws=ws)
    assert b"may set only" not in r.stderr, r.stderr
