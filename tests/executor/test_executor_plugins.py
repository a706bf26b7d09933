"""Lifecycle plugins: every phase fires at its point, priorities, failures masked, CLEANUP always."""

from __future__ import annotations

import io
import os
import signal
import threading
from pathlib import Path

import pytest

from runnerlib.config import get_config
from runnerlib.jobs import Job
from runnerlib.plugin_loader import PluginLoadError, load_plugins
from runnerlib.plugins import Plugin, PluginContext, PluginManager, PluginPhase
from runnerlib.runner import JobRunner

ALL = [PluginPhase.PRE_VALIDATION, PluginPhase.POST_VALIDATION, PluginPhase.PRE_SOURCE_PREP,
       PluginPhase.POST_SOURCE_PREP, PluginPhase.PRE_EXECUTION, PluginPhase.POST_EXECUTION,
       PluginPhase.ON_ERROR, PluginPhase.CLEANUP]
SECRET = "plugin-secret-Zq81xw"


class Recorder(Plugin):
    def __init__(self, name: str = "rec", priority: int = 100, log: list | None = None,
                 fail_in: PluginPhase | None = None) -> None:
        super().__init__(name, priority)
        self.log = log if log is not None else []
        self.fail_in = fail_in
        self.exit_codes: dict[PluginPhase, int | None] = {}

    def supported_phases(self) -> list[PluginPhase]:
        return ALL

    def _hit(self, phase: PluginPhase, ctx: PluginContext) -> None:
        self.log.append((self.name, phase))
        self.exit_codes[phase] = ctx.exit_code
        if phase is self.fail_in:
            raise RuntimeError(f"{self.name} broke holding {SECRET}")

    def pre_validation(self, ctx): self._hit(PluginPhase.PRE_VALIDATION, ctx)  # noqa: ANN001, E704
    def post_validation(self, ctx): self._hit(PluginPhase.POST_VALIDATION, ctx)  # noqa: ANN001, E704
    def pre_source_prep(self, ctx): self._hit(PluginPhase.PRE_SOURCE_PREP, ctx)  # noqa: ANN001, E704
    def post_source_prep(self, ctx): self._hit(PluginPhase.POST_SOURCE_PREP, ctx)  # noqa: ANN001, E704
    def pre_execution(self, ctx): self._hit(PluginPhase.PRE_EXECUTION, ctx)  # noqa: ANN001, E704
    def post_execution(self, ctx): self._hit(PluginPhase.POST_EXECUTION, ctx)  # noqa: ANN001, E704
    def on_error(self, ctx): self._hit(PluginPhase.ON_ERROR, ctx)  # noqa: ANN001, E704
    def cleanup(self, ctx): self._hit(PluginPhase.CLEANUP, ctx)  # noqa: ANN001, E704


def make_runner(ws: Path, plugins: list[Plugin], job: Job | None = None, **settings) -> tuple[JobRunner, io.BytesIO]:  # noqa: ANN003
    settings.setdefault("job_command", "echo hello")
    config = get_config(environ={}, workspace_root=str(ws), secret_values_list=SECRET, **settings)
    out = io.BytesIO()
    runner = JobRunner(config, job, plugins=PluginManager(plugins), out=out, environ=dict(os.environ),
                       handle_signals=False)
    return runner, out


def phases(rec: Recorder) -> list[PluginPhase]:
    return [p for _, p in rec.log]


def test_every_phase_fires_in_order_on_success(ws: Path) -> None:
    rec = Recorder()
    runner, out = make_runner(ws, [rec])
    assert runner.run() == 0
    assert phases(rec) == [p for p in ALL if p is not PluginPhase.ON_ERROR]
    assert rec.exit_codes[PluginPhase.POST_EXECUTION] == 0
    assert b"hello" in out.getvalue()


def test_failing_step_fires_on_error_then_cleanup(ws: Path) -> None:
    rec = Recorder()
    runner, _ = make_runner(ws, [rec], job_command="exit 5")
    assert runner.run() == 5
    assert phases(rec)[-3:] == [PluginPhase.POST_EXECUTION, PluginPhase.ON_ERROR, PluginPhase.CLEANUP]
    assert rec.exit_codes[PluginPhase.ON_ERROR] == 5


@pytest.mark.parametrize("phase", [p for p in ALL if p not in (PluginPhase.ON_ERROR, PluginPhase.CLEANUP)])
def test_plugin_failure_anywhere_reported_masked_and_cleanup_runs(ws: Path, phase: PluginPhase) -> None:
    log: list = []
    bad = Recorder("bad", priority=10, log=log, fail_in=phase)
    other = Recorder("other", priority=20, log=log)
    runner, out = make_runner(ws, [bad, other])
    code = runner.run()
    text = out.getvalue().decode()
    assert code == 1
    assert "plugin 'bad' failed in " + phase.value in text
    assert SECRET not in text and SECRET[:8] not in text and "***" in text
    assert ("other", PluginPhase.ON_ERROR) in log and ("other", PluginPhase.CLEANUP) in log
    assert ("bad", PluginPhase.CLEANUP) in log


def test_cleanup_failure_does_not_stop_other_cleanups(ws: Path) -> None:
    log: list = []
    first = Recorder("first", priority=1, log=log, fail_in=PluginPhase.CLEANUP)
    second = Recorder("second", priority=2, log=log, fail_in=PluginPhase.CLEANUP)
    third = Recorder("third", priority=3, log=log)
    runner, out = make_runner(ws, [third, second, first])
    assert runner.run() == 1  # a broken cleanup fails an otherwise green job
    cleanups = [name for name, p in log if p is PluginPhase.CLEANUP]
    assert cleanups == ["first", "second", "third"]  # priority order, all of them
    text = out.getvalue().decode()
    assert text.count("failed in cleanup") >= 2 and SECRET not in text


def test_priority_orders_plugins_within_a_phase(ws: Path) -> None:
    log: list = []
    plugins = [Recorder("late", 90, log), Recorder("early", 5, log), Recorder("mid", 50, log)]
    runner, _ = make_runner(ws, plugins)
    runner.run()
    assert [n for n, p in log if p is PluginPhase.PRE_EXECUTION] == ["early", "mid", "late"]


def test_plugin_changes_config_and_env_before_they_apply(ws: Path) -> None:
    class Changer(Plugin):
        def __init__(self) -> None:
            super().__init__("changer")

        def pre_validation(self, ctx: PluginContext) -> None:
            ctx.config.set("job_command", "echo changed-$FROM_PLUGIN", "plugin changer")

        def pre_execution(self, ctx: PluginContext) -> None:
            ctx.env["FROM_PLUGIN"] = "yes"

    runner, out = make_runner(ws, [Changer()])
    assert runner.run() == 0
    assert b"changed-yes" in out.getvalue()


def test_plugin_making_config_invalid_is_refused_before_running(ws: Path) -> None:
    class Breaker(Plugin):
        def __init__(self) -> None:
            super().__init__("breaker")

        def pre_validation(self, ctx: PluginContext) -> None:
            ctx.config.set("source_url", "https://example.com/x.git", "plugin breaker")

    rec = Recorder()
    runner, out = make_runner(ws, [Breaker(), rec], job_command="touch ran")
    assert runner.run() == 78
    assert b"source_url (from plugin breaker)" in out.getvalue()
    assert not (ws / "src" / "ran").exists()
    assert PluginPhase.PRE_EXECUTION not in phases(rec) and PluginPhase.CLEANUP in phases(rec)


def test_legacy_container_phase_names() -> None:
    assert PluginPhase.PRE_CONTAINER is PluginPhase.PRE_EXECUTION
    assert PluginPhase.POST_CONTAINER is PluginPhase.POST_EXECUTION
    hits = []

    class Old(Plugin):
        def supported_phases(self):  # noqa: ANN202
            return [PluginPhase.PRE_CONTAINER]

        def pre_container(self, ctx):  # noqa: ANN001, ANN202
            hits.append("pre_container")

    manager = PluginManager([Old("old")])
    manager.run_phase(PluginPhase.PRE_EXECUTION, PluginContext(config=None))
    assert hits == ["pre_container"]


def test_plugin_timings_in_summary(ws: Path) -> None:
    runner, out = make_runner(ws, [Recorder("timed")])
    runner.run()
    text = out.getvalue().decode()
    assert "PLUGIN" in text and "timed" in text
    assert any(t.plugin == "timed" and t.phase is PluginPhase.CLEANUP for t in runner.plugins.timings)


def test_job_timeout_fires_on_error_and_cleanup(ws: Path) -> None:
    rec = Recorder()
    runner, _ = make_runner(ws, [rec], job_command="sleep 30", job_timeout=0.5, kill_grace=1)
    assert runner.run() == 124
    assert phases(rec)[-2:] == [PluginPhase.ON_ERROR, PluginPhase.CLEANUP]


def test_sigterm_during_a_plugin_unwinds_to_cleanup(ws: Path) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")

    class Slow(Recorder):
        def pre_source_prep(self, ctx):  # noqa: ANN001, ANN202
            self._hit(PluginPhase.PRE_SOURCE_PREP, ctx)
            os.kill(os.getpid(), signal.SIGTERM)
            threading.Event().wait(5)  # interrupted by the handler's exception
            self.log.append(("slow", "not reached"))

    rec = Slow("slow")
    config = get_config(environ={}, workspace_root=str(ws), job_command="echo x")
    runner = JobRunner(config, plugins=PluginManager([rec]), out=io.BytesIO(), environ=dict(os.environ))
    assert runner.run() == 143
    assert ("slow", "not reached") not in rec.log
    assert phases(rec)[-2:] == [PluginPhase.ON_ERROR, PluginPhase.CLEANUP]


# --- loading plugin files -----------------------------------------------------------------------------------

PLUGIN_FILE = """
from runnerlib.plugins import Plugin, PluginPhase

class Marker(Plugin):
    def __init__(self):
        super().__init__("marker-{n}", priority=10)

    def cleanup(self, context):
        open({path!r}, "w").write("cleanup ran")

PLUGINS = [Marker()]
"""


def test_plugins_load_from_trusted_dirs_only(ws: Path) -> None:
    trusted = ws / "ci" / ".reactorcide" / "plugins"
    trusted.mkdir(parents=True)
    (trusted / "marker.py").write_text(PLUGIN_FILE.format(n=1, path=str(ws / "m1")))
    os.chmod(trusted / "marker.py", 0o644)
    manager = PluginManager()
    assert load_plugins([str(trusted)], manager, workspace_root=str(ws), untrusted_dirs=[str(ws / "src")]) \
        == ["marker-1"]

    # The attack: a pull request adds a plugin under src/ and points --plugin-dir at it.
    evil = ws / "src" / ".reactorcide" / "plugins"
    evil.mkdir(parents=True)
    (evil / "evil.py").write_text("raise SystemExit('evil plugin executed')\n")
    with pytest.raises(PluginLoadError, match="untrusted source tree"):
        load_plugins([str(evil)], PluginManager(), workspace_root=str(ws), untrusted_dirs=[str(ws / "src")])
    # ... and the same directory would have been loaded (and run) without the refusal:
    with pytest.raises(PluginLoadError, match="evil plugin executed|SystemExit"):
        load_plugins([str(evil)], PluginManager(), workspace_root=str(ws), untrusted_dirs=[])


def test_world_writable_plugin_file_refused(ws: Path) -> None:
    d = ws / "ci" / "plugins"
    d.mkdir(parents=True)
    f = d / "p.py"
    f.write_text("PLUGINS = []\n")
    os.chmod(f, 0o666)
    with pytest.raises(PluginLoadError, match="writable by group or others"):
        load_plugins([str(d)], PluginManager(), workspace_root=str(ws), untrusted_dirs=[])


def test_plugin_dir_outside_workspace_refused(ws: Path) -> None:
    with pytest.raises(PluginLoadError, match="inside the workspace"):
        load_plugins(["/etc"], PluginManager(), workspace_root=str(ws), untrusted_dirs=[])


def test_runner_loads_plugin_dir_and_ci_plugins(ws: Path) -> None:
    pdir = ws / "plugins"
    pdir.mkdir()
    (pdir / "a.py").write_text(PLUGIN_FILE.format(n=1, path=str(ws / "m1")))
    ci = ws / "ci" / ".reactorcide" / "plugins"
    ci.mkdir(parents=True)
    (ci / "b.py").write_text(PLUGIN_FILE.format(n=2, path=str(ws / "m2")))
    runner, out = make_runner(ws, [], plugin_dirs=[str(pdir)])
    assert runner.run() == 0, out.getvalue().decode()
    assert (ws / "m1").read_text() == "cleanup ran" and (ws / "m2").read_text() == "cleanup ran"


def test_plugin_env_reaches_untrusted_steps_but_not_its_secrets(ws: Path) -> None:
    class Env(Plugin):
        def __init__(self) -> None:
            super().__init__("env")

        def pre_execution(self, ctx: PluginContext) -> None:
            ctx.env["FLAVOUR"] = "release"
            ctx.env["PLUGIN_TOKEN"] = "plugin-made-token-123"  # a secret-looking name: trusted steps only

    src = ws / "src"
    src.mkdir()
    os.chmod(src, 0o777)
    job = Job("j")
    job.add_step("t", f"echo t=$FLAVOUR/$PLUGIN_TOKEN > {src}/t.txt")
    job.add_step("u", "echo u=$FLAVOUR/$PLUGIN_TOKEN > u.txt", trust="untrusted")
    runner, out = make_runner(ws, [Env()], job=job)
    code = runner.run()
    text = out.getvalue().decode()
    if "sandbox" in text and "refused" in text:
        pytest.skip("no sandbox on this kernel")
    assert code == 0, text
    assert (src / "t.txt").read_text() == "t=release/plugin-made-token-123\n"
    assert (ws / ".untrusted" / "src" / "u.txt").read_text() == "u=release/\n"  # its own copy of src
