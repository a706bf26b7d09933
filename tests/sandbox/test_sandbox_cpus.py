"""The `cpus` limit: CPU bandwidth of an untrusted step (cgroup v2 cpu.max, v1 cpu.cfs_quota_us).

No rlimit can cap bandwidth, so a step asking for `cpus` where no cgroup cpu controller is writable is refused
(fail closed), and a trusted step (which gets no cgroup of its own) cannot ask for it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sandbox_testlib import IS_ROOT, STEP_PYTHON, needs_landlock

from runnerlib.execution.process import run_process
from runnerlib.security import cgroups
from runnerlib.security.limits import (
    LimitError,
    StepLimits,
    describe_limit,
    limits_from_mapping,
    parse_limit_options,
)
from runnerlib.security.spawn import SandboxRefused, plan_sandbox


@pytest.mark.parametrize("value,expected", [(2, 2.0), ("1.5", 1.5), ("500m", 0.5), (0.25, 0.25), ("10m", 0.01)])
def test_cpus_are_counts_or_millicpus(value, expected):
    assert StepLimits(cpus=value).cpus == expected
    assert parse_limit_options([f"cpus={value}"]).cpus == expected


@pytest.mark.parametrize("bad", ["0", "-1", "x", "5m", True, "1.5.2", "nan", "inf"])
def test_bad_cpus_name_the_field(bad):
    with pytest.raises(LimitError, match=r"^limits cpus: "):
        limits_from_mapping({"cpus": bad})


@given(st.one_of(st.text(max_size=12), st.floats(allow_nan=True), st.integers()))
def test_cpus_parser_never_crashes(value):
    try:
        cpus = StepLimits(cpus=value).cpus
        assert cpus is not None and 0.01 <= cpus <= 1 << 20
    except ValueError:
        pass


def test_describe():
    assert describe_limit("cpus", 1.5) == "1.5 CPUs" and describe_limit("cpus", 1.0) == "1 CPU"
    assert StepLimits(cpus=0.5).describe() == "cpus=0.5 CPUs"


def test_cpus_without_a_cpu_cgroup_is_refused(workspace, monkeypatch):
    monkeypatch.setattr(cgroups, "available", lambda: {})
    with pytest.raises(SandboxRefused, match=r"cpus limit 0\.5 CPUs needs a writable cgroup cpu controller"):
        plan_sandbox(workspace.policy(limits=StepLimits(cpus=0.5)), dumpable=False, make_tmp=False)
    plan = plan_sandbox(workspace.policy(limits=StepLimits(cpus=0.5), best_effort=True), dumpable=False,
                        make_tmp=False)
    assert any("cpus" in n for n in plan.notes)


def test_a_trusted_step_cannot_ask_for_cpus(registry):
    result = run_process(["true"], registry=registry, trusted=True, limits=StepLimits(cpus=1))
    assert result.refused and result.exit_code == 126 and "cpus" in (result.reason or ""), result


def test_v2_cpu_max_is_written(tmp_path):
    base = tmp_path / "cg"
    base.mkdir()
    (base / "cgroup.controllers").write_text("cpu memory pids\n")
    (base / "cgroup.subtree_control").write_text("cpu\n")
    made = cgroups.StepCgroup.create(None, None, cpus=0.25, where={"cpu": cgroups.Hierarchy(2, str(base))},
                                     v2=str(base))
    assert made is not None and made.controllers == ["cpu"]
    assert Path(made.dirs["cpu"], "cpu.max").read_text() == "25000 100000"


@needs_landlock
def test_a_busy_step_is_throttled_to_its_cpus(workspace, registry, monkeypatch):
    """A step spinning on every CPU it can get, limited to 0.05 CPUs: the kernel throttled it (its cgroup's
    cpu.stat counts throttled periods; read before the cgroup is removed). Control: no cgroup cpu limit
    without `cpus`."""
    if "cpu" not in cgroups.available():
        pytest.skip("no writable cgroup cpu controller here (not root, nothing delegated)")
    seen: dict[str, str] = {}
    real = cgroups.StepCgroup.remove

    def spy(self, wait=5.0):  # type: ignore[no-untyped-def]
        if "cpu" in self.dirs:
            seen["stat"] = Path(self.dirs["cpu"], "cpu.stat").read_text()
            seen["version"] = str(self.version("cpu"))
        real(self, wait)

    monkeypatch.setattr(cgroups.StepCgroup, "remove", spy)
    spin = "import time\nend = time.monotonic() + 0.5\nwhile time.monotonic() < end:\n    pass"
    result = run_process([STEP_PYTHON, "-I", "-c", spin], registry=registry, trusted=False,
                         policy=workspace.policy(limits=StepLimits(cpus=0.05)), env={"PATH": "/usr/bin:/bin"},
                         cwd=str(workspace.src), timeout=60)
    assert result.exit_code == 0, result
    stat = dict(line.split() for line in seen["stat"].splitlines())
    assert int(stat["nr_throttled"]) > 0, seen
    seen.clear()
    control = run_process([STEP_PYTHON, "-I", "-c", "pass"], registry=registry, trusted=False,
                          policy=workspace.policy(limits=StepLimits(pids=100)), env={"PATH": "/usr/bin:/bin"},
                          cwd=str(workspace.src), timeout=60)
    assert control.exit_code == 0 and "stat" not in seen, control


def test_policy_names_the_cpus_mechanism(workspace):
    if "cpu" not in cgroups.available():
        pytest.skip("no writable cgroup cpu controller here")
    plan = plan_sandbox(workspace.policy(limits=StepLimits(cpus=1.5)), dumpable=False, make_tmp=False)
    how = {n: m for n, _v, m in plan.limit_mechanisms()}["cpus"]
    assert how.startswith(f"cgroup v{cgroups.version_of('cpu')} cpu.")
    assert IS_ROOT or cgroups.version_of("cpu") == 2
    assert os.path.isdir(cgroups.available()["cpu"].path)
