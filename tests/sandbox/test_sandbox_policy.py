"""Policy validation, fail-closed planning, best-effort opt-in, the capability matrix, the untrusted
environment, self-protection, audit, and the raw Landlock / seccomp bindings."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sandbox_testlib import CHECKOUT, IS_ROOT, SECRET, STEP_PYTHON, fragments

from runnerlib.execution.process import run_process
from runnerlib.security.audit import audit
from runnerlib.security.lowlevel import landlock, seccomp
from runnerlib.security.policy import PolicyError, Rlimits, SandboxPolicy
from runnerlib.security.probe import probe
from runnerlib.security.registry import SecretRegistry
from runnerlib.security.spawn import SandboxRefused, plan_sandbox
from runnerlib.security.untrusted_env import build_untrusted_env

# --- policy -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rw", ["/job", "/job/ci", "/job/ci/sub", "/", "/job/./ci"])
def test_writable_grant_may_not_overlap_ci(rw):
    with pytest.raises(PolicyError, match="read_write_paths.*protected"):
        SandboxPolicy(read_write_paths=(rw,))


def test_writable_symlink_to_ci_is_refused(tmp_path):
    (tmp_path / "ci").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "ci")
    with pytest.raises(PolicyError):
        SandboxPolicy.for_workspace(str(tmp_path), read_write_paths=(str(tmp_path / "alias"),))


@pytest.mark.parametrize("change,field", [({"uid": 0}, "uid"), ({"gid": 0}, "gid"),
                                           ({"read_only_paths": ("relative",)}, "read_only_paths"),
                                           ({"tmp_root": "tmp"}, "tmp_root")])
def test_bad_fields_name_the_field(change, field):
    with pytest.raises(PolicyError) as info:
        SandboxPolicy(**change)
    assert info.value.field == field


def test_rlimits():
    with pytest.raises(PolicyError, match="core"):
        Rlimits(core=1)
    with pytest.raises(PolicyError, match="nofile"):
        Rlimits(nofile=-1)


def test_describe_lists_the_policy():
    text = SandboxPolicy(deny_network=True).describe()
    for word in ("uid 65534", "/job/ci", "no_new_privs", "TIOCSTI", "denied", "fail closed", "core=0"):
        assert word in text


def test_best_effort_from_env():
    assert SandboxPolicy.from_env({"REACTORCIDE_SANDBOX_BEST_EFFORT": "true"}).best_effort
    assert not SandboxPolicy.from_env({}).best_effort


# --- fail closed ---------------------------------------------------------------------------------------------


def _caps(**kw):
    return dataclasses.replace(probe(), **kw)


def test_refused_without_landlock_when_ci_is_writable(workspace):
    caps = _caps(landlock_abi=0, is_root=False, uid=os.geteuid())
    with pytest.raises(SandboxRefused) as info:
        plan_sandbox(workspace.policy(), caps, dumpable=False, make_tmp=False)
    message = str(info.value)
    assert "cannot be made read-only" in message and "REACTORCIDE_SANDBOX_BEST_EFFORT=true" in message


def test_refused_when_sharing_uid_with_a_dumpable_runner(workspace):
    caps = _caps(is_root=False, uid=os.geteuid())
    with pytest.raises(SandboxRefused, match="dumpable"):
        plan_sandbox(workspace.policy(), caps, dumpable=True, make_tmp=False)


def test_refused_without_seccomp(workspace):
    with pytest.raises(SandboxRefused, match="seccomp"):
        plan_sandbox(workspace.policy(), _caps(seccomp_filter=False), dumpable=False, make_tmp=False)


def test_best_effort_is_opt_in_and_logged(workspace, caplog):
    caplog.set_level(logging.WARNING, logger="runnerlib")
    caps = _caps(seccomp_filter=False)
    plan = plan_sandbox(workspace.policy(best_effort=True), caps, dumpable=False, make_tmp=False)
    assert plan.plan["seccomp"] is None
    assert "best-effort" in caplog.text and "best-effort gap" in plan.describe()


def test_refusal_is_exit_126_with_reason(workspace, registry, monkeypatch):
    import runnerlib.execution.process as process

    def refuse(policy):
        raise SandboxRefused(["Landlock is unavailable"])

    monkeypatch.setattr(process, "plan_sandbox", refuse)
    result = run_process(f"echo {SECRET}", registry=registry, trusted=False, policy=workspace.policy())
    assert (result.exit_code, result.refused) == (126, True)
    assert "Landlock is unavailable" in result.reason and "best_effort" in result.reason
    assert result.output == ""  # nothing ran


def test_untrusted_step_refused_by_a_dumpable_unprivileged_runner(workspace):
    """In a fresh (dumpable) unprivileged process, untrusted steps are refused: 126 and the reason."""
    if IS_ROOT:
        pytest.skip("as root the step switches uid, so the runner's dumpable flag does not matter")
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {CHECKOUT!r})
        from runnerlib.execution.process import run_process
        from runnerlib.security.policy import SandboxPolicy
        from runnerlib.security.registry import SecretRegistry
        r = run_process("true", registry=SecretRegistry(), trusted=False,
                        policy=SandboxPolicy.for_workspace({str(workspace.root)!r}))
        print(r.exit_code, r.refused, r.reason)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.startswith("126 True") and "dumpable" in out


# --- capability matrix ---------------------------------------------------------------------------------------


def test_probe_matrix():
    caps = probe()
    assert caps is probe()  # probed once
    text = caps.describe()
    assert f"Landlock ABI {caps.landlock_abi}" in text and "seccomp" in text
    assert caps.landlock_abi == landlock.abi_version()
    assert set(caps.to_dict()) >= {"is_root", "landlock_abi", "seccomp_filter", "user_namespaces"}


# --- untrusted environment ------------------------------------------------------------------------------------

names = st.from_regex(r"[A-Z][A-Z0-9_]{0,12}", fullmatch=True)


@given(st.dictionaries(names, st.text(max_size=30)), st.text(min_size=0, max_size=10),
       st.text(min_size=0, max_size=10))
def test_untrusted_env_never_carries_a_secret(job_env, before, after):
    registry = SecretRegistry()
    registry.add(SECRET, source="t")
    job_env = dict(job_env)
    job_env["CARRIER"] = before + SECRET + after
    env = build_untrusted_env(job_env, registry=registry, tmpdir="/tmp/x", base_env={})
    assert "CARRIER" not in env
    for value in env.values():
        assert SECRET not in value
    for name in env:
        assert not name.endswith(("_TOKEN", "_PASSWORD", "_SECRET"))
    assert env["TMPDIR"] == env["HOME"] == "/tmp/x" and env["CI"] == "true"


def test_untrusted_env_drops_named_and_never_vars():
    registry = SecretRegistry()
    env = build_untrusted_env({"PLAIN": "1", "MYVAR": "x"}, registry=registry, tmpdir=None, base_env={
        "REACTORCIDE_SECRET_ENV_NAMES": "MYVAR", "REACTORCIDE_SECRETS_SOCKET": "/s", "LANG": "en_US.UTF-8",
        "REACTORCIDE_BRANCH": "main", "HOME": "/root"})
    assert env["PLAIN"] == "1" and "MYVAR" not in env and "REACTORCIDE_SECRETS_SOCKET" not in env
    assert env["LANG"] == "en_US.UTF-8" and env["REACTORCIDE_BRANCH"] == "main" and env["HOME"] != "/root"


# --- self-protection and audit ------------------------------------------------------------------------------


def _proc(pid, what):
    with open(f"/proc/{pid}/{what}", "rb") as f:
        return f.read()


@pytest.mark.parametrize("protect", [True, False])
def test_protect_runner_scrubs_argv(victim, protect):
    v = victim(protect=protect, secret_on_argv=True)
    cmdline = _proc(v.pid, "cmdline")  # world-readable, whatever the dumpable flag
    assert any(f.encode() in cmdline for f in fragments(SECRET)) != protect


@pytest.mark.parametrize("protect", [True, False])
def test_procmem_scrubs_the_environment_block(protect):
    """In the process itself (its own /proc/self/environ stays readable to it): the block is overwritten."""
    r = _in_child(f"""
        import os
        from runnerlib.security.lowlevel import procmem
        if {protect!r}:
            n = procmem.scrub_environ(lambda e: e.startswith(b"VICTIM_TOKEN="))
            assert n == 1
        data = open("/proc/self/environ", "rb").read()
        print("NAME" if b"VICTIM_TOKEN=" in data else "", "LEAK" if {SECRET!r}.encode() in data else "CLEAN")
        print(os.environ["VICTIM_TOKEN"] == {SECRET!r})  # the Python copy is untouched
    """, env={"VICTIM_TOKEN": SECRET})
    lines = r.stdout.split()
    assert lines == (["NAME", "CLEAN", "True"] if protect else ["NAME", "LEAK", "True"]), r.stderr


def test_protect_runner_makes_the_runner_non_dumpable(victim):
    v = victim(protect=True)
    status = _proc(v.pid, "status").decode()
    if IS_ROOT:
        # Root with CAP_SYS_PTRACE still reads it: show the flag through a same-uid reader instead.
        code = f"open('/proc/{v.pid}/environ','rb').read()"
        r = subprocess.run([STEP_PYTHON, "-c", code], user=65534, capture_output=True, text=True)
        assert "Permission denied" in r.stderr
    else:
        with pytest.raises(PermissionError):
            _proc(v.pid, "environ")
    assert "Pid" in status


def test_audit_finds_exposed_secrets_masked(registry):
    proc = subprocess.Popen(["sh", "-c", "sleep 30", SECRET], env={"PATH": "/usr/bin:/bin", "X_TOKEN": SECRET})
    try:
        report = audit(registry)
        hits = [f for f in report.findings if f.pid == proc.pid]
        assert {f.where for f in hits} == {"cmdline", "environ"}
        text = report.describe()
        assert "***" in text and all(frag not in text for frag in fragments(SECRET))
    finally:
        proc.kill()
        proc.wait()
    clean = subprocess.Popen(["sleep", "30"], env={"PATH": "/usr/bin:/bin"})
    try:
        assert audit(registry, [clean.pid]).clean
    finally:
        clean.kill()
        clean.wait()


# --- raw bindings ---------------------------------------------------------------------------------------------


def _in_child(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    prog = f"import sys; sys.path.insert(0, {CHECKOUT!r})\n" + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-I", "-c", prog], capture_output=True, text=True, timeout=60,
                          env=env)


def test_seccomp_filter_errno_and_arch_check():
    r = _in_child("""
        import ctypes, errno, os, fcntl, termios
        from runnerlib.security.lowlevel import seccomp
        libc = ctypes.CDLL(None, use_errno=True)
        def err(f):
            try: f(); return 0
            except OSError as e: return e.errno
        before = err(lambda: fcntl.ioctl(0, termios.TIOCSTI, b"x"))
        seccomp.set_no_new_privs(); seccomp.load_filter(seccomp.build_filter())
        after = err(lambda: fcntl.ioctl(0, termios.TIOCSTI, b"x"))
        print(before, after, err(lambda: os.unshare(0)) if hasattr(os, "unshare") else 1)
    """)
    before, after, _ = r.stdout.split()
    assert int(before) != errno_eperm() and int(after) == errno_eperm(), r.stderr


def errno_eperm() -> int:
    return 1


def test_seccomp_program_shape():
    prog = seccomp.build_filter("x86_64")
    assert len(prog) % 8 == 0
    first = [prog[i:i + 8] for i in range(0, 24, 8)]
    import struct
    code, jt, jf, k = struct.unpack("=HBBI", first[1])
    assert k == seccomp.AUDIT_ARCH_X86_64
    assert struct.unpack("=HBBI", first[2])[3] == seccomp.RET_KILL_PROCESS  # bad arch: kill, never allow
    assert seccomp.build_filter("aarch64") != prog
    assert len(seccomp.build_filter("x86_64", deny_network=True)) > len(prog)


def test_landlock_binding_checks_return_values(tmp_path):
    abi = landlock.abi_version()
    if abi < 1:
        pytest.skip("no Landlock on this kernel")
    with pytest.raises(OSError):
        landlock.Ruleset(abi).allow_path(str(tmp_path / "missing"), landlock.read_only_access(abi))
    (tmp_path / "f").write_text("x")
    r = _in_child(f"""
        from runnerlib.security.lowlevel import landlock, seccomp
        abi = landlock.abi_version()
        rs = landlock.Ruleset(abi, scope=abi >= 6)
        rs.allow_path({str(tmp_path)!r}, landlock.read_only_access(abi))
        seccomp.set_no_new_privs(); rs.restrict_self()
        print(open({str(tmp_path / 'f')!r}).read())
        try:
            open({str(tmp_path / 'f')!r}, "w"); print("WROTE")
        except PermissionError:
            print("DENIED")
    """)
    assert r.stdout.split() == ["x", "DENIED"], r.stderr


segments = st.lists(st.sampled_from(["job", "ci", "src", "a", ".", ".."]), min_size=0, max_size=5)


@given(segments)
def test_policy_never_accepts_a_writable_grant_overlapping_ci(parts):
    rw = os.path.normpath("/" + "/".join(parts))
    overlaps = rw in ("/", "/job") or rw == "/job/ci" or rw.startswith("/job/ci/")
    try:
        SandboxPolicy(read_write_paths=(rw,))
    except PolicyError:
        assert overlaps
    else:
        assert not overlaps
