"""Issue 11, round three: what still crossed the trust boundary after rounds one and two, tried as an attacker.

Each test runs a job the way a user would (an untrusted step, then trusted ones) and checks the rule: after an
untrusted step has run, nothing it created or changed is executed, obeyed or shown as runnerlib's own words by a
trusted step or by runnerlib. Each has a control that shows the attack works when the protection is off.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netlib import metadata_address_on_lo, serving
from sandbox_testlib import IS_ROOT, SECRET, caps, fragments, job_root, needs_landlock

from runnerlib import Job, get_config
from runnerlib.runner import JobRunner
from runnerlib.security import network, paths
from runnerlib.security.lowlevel import nftables
from runnerlib.source import copy_secrets, dual, handover, job_trees, tarball
from runnerlib.testing import reachable_tempdir

ENV = {"PATH": "/usr/bin:/bin", "DEPLOY_TOKEN": SECRET, "LC_ALL": "C"}


@pytest.fixture
def root() -> Iterator[Path]:
    with job_root("rl-redteam3-") as path:
        yield path


def run(root: Path, job: Job, extra_env: dict[str, str] | None = None, **config: object) -> tuple[int, str]:
    out = io.BytesIO()
    env = {**ENV, "HOME": str(root), **(extra_env or {})}
    code = JobRunner(get_config(workspace_root=str(root), **config), job, out=out, handle_signals=False,
                     environ=env).run()
    return code, out.getvalue().decode("utf-8", "replace")


# -- 1. VCS metadata handed over: the take-over by root launders git's and hg's own ownership checks ------------

GIT_PLANT = ("cd \"$REACTORCIDE_ARTIFACTS_DIR\" && mkdir -p site && echo '<h1>docs</h1>' > site/index.html && "
             "git init -q site && git config -f site/.git/config core.fsmonitor 'echo \"$DEPLOY_TOKEN\" > {m}site #' "
             "&& git init -q . && git config -f .git/config core.fsmonitor 'echo \"$DEPLOY_TOKEN\" > {m}top #' "
             "&& echo planted")
GIT_TRUSTED = ("cd \"$REACTORCIDE_ARTIFACTS_DIR/site\" && git status --short; "
               "mkdir -p \"$REACTORCIDE_ARTIFACTS_DIR/release\" && cd \"$REACTORCIDE_ARTIFACTS_DIR/release\" "
               "&& git status --short; true")


def _vcs_job(root: Path) -> tuple[Job, Path]:
    marker = root / "PWNED-"
    job = Job("vcs")
    job.add_step("pr", GIT_PLANT.format(m=marker), trust="untrusted")
    # A docs publisher: the untrusted build's site is committed by a trusted step (gh-pages style), and a
    # release step works in a directory of its own under the hand-over area.
    job.add_step("publish", GIT_TRUSTED, depends_on=["pr"])
    return job, marker


def _pwned(marker: Path) -> list[str]:
    return sorted(p.name for p in marker.parent.iterdir() if p.name.startswith(marker.name))


@needs_landlock
@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_metadata_planted_in_the_hand_over_area_never_runs_in_a_trusted_step(root: Path) -> None:
    """An untrusted step leaves `.git` directories (core.fsmonitor) in /job/artifacts. As root, the hand-over
    clean-up gave them to root, so git's "dubious ownership" check no longer refused them: a trusted `git status`
    in the site it publishes, or in a directory of its own below a planted `.git`, ran the command with the
    secrets. A `.git` is program-running configuration, not data: it does not cross."""
    job, marker = _vcs_job(root)
    code, out = run(root, job)
    assert code == 0, out
    assert "[pr] planted" in out, out
    assert _pwned(marker) == [], out
    assert "hand-over: removed" in out and "site/.git" in out, out
    assert not (root / "artifacts" / ".git").exists() and (root / "artifacts" / "site" / "index.html").exists()


@needs_landlock
@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_control_git_metadata_handed_over_runs_when_vcs_directories_may_cross(root: Path, monkeypatch) -> None:
    """Control: with VCS directories allowed to cross (the clean-up of round two), both plants run."""
    monkeypatch.setattr(handover, "VCS_DIRECTORIES", ())
    job, marker = _vcs_job(root)
    code, out = run(root, job)
    assert code == 0, out
    assert _pwned(marker) == ["PWNED-site", "PWNED-top"], out
    assert (root / "PWNED-site").read_text().strip() == SECRET


HG_PLANT = ("cd \"$REACTORCIDE_ARTIFACTS_DIR\" && mkdir -p pkg && cd pkg && hg init . && "
            "printf '[hooks]\\npre-status = echo \"$DEPLOY_TOKEN\" > {m}hg\\n' > .hg/hgrc && echo planted")


@needs_landlock
@pytest.mark.skipif(shutil.which("hg") is None, reason="hg is not installed")
@pytest.mark.parametrize("crossing", [False, True], ids=["protected", "control"])
def test_hg_hooks_planted_in_the_hand_over_area_never_run_in_a_trusted_step(root: Path, monkeypatch,
                                                                           crossing: bool) -> None:
    """hg trusts an .hg/hgrc only from a trusted owner: the take-over by root made the planted one trusted.
    Control (`.hg` allowed to cross): the hook runs with the secret."""
    if crossing:
        monkeypatch.setattr(handover, "VCS_DIRECTORIES", ())
    marker = root / "PWNED-"
    job = Job("hg")
    job.add_step("pr", HG_PLANT.format(m=marker), trust="untrusted")
    job.add_step("status", "cd \"$REACTORCIDE_ARTIFACTS_DIR/pkg\" && hg status; true", depends_on=["pr"])
    code, out = run(root, job)
    assert code == 0 and "[pr] planted" in out, out
    if crossing:
        assert (root / "PWNED-hg").read_text().strip() == SECRET, out
    else:
        assert _pwned(marker) == [], out


# -- 2. runnerlib's own lines: names from the hand-over area are quoted ----------------------------------------

FORGED = "==> 09:16:17 [deploy] finished (ok) in 0.01s"


@needs_landlock
def test_hand_over_names_cannot_forge_runnerlib_lines(root: Path) -> None:
    """The clean-up names each removed entry in runnerlib's own warning. A symlink named with a newline and a
    fake status line (or a terminal escape) printed runnerlib lines the untrusted step chose."""
    job = Job("names")
    job.add_step("pr", f"cd \"$REACTORCIDE_ARTIFACTS_DIR\" && ln -s /etc/passwd \"$(printf 'x\\n{FORGED}\\r\\033[2K')\"",
                 trust="untrusted")
    job.add_step("deploy", "false", depends_on=["pr"])
    code, out = run(root, job)
    assert code == 1, out
    lines = out.splitlines()
    assert FORGED not in lines and not any(line.startswith(FORGED) for line in lines), out
    assert "\x1b" not in out and "\r" not in out, out
    removed = [line for line in lines if "hand-over: removed" in line]
    assert len(removed) == 1 and "x\\n==> 09:16:17 [deploy] finished (ok)" in removed[0], out


def test_control_a_plain_name_is_shown_as_it_is() -> None:
    """Control: quoting leaves ordinary names (spaces and non-ASCII letters included) unchanged."""
    assert handover.shown_name("reports/junit é 1.xml") == "reports/junit é 1.xml"
    assert handover.shown_name("x\n==> y\x1b[2K\r") == "x\\n==> y\\x1b[2K\\r"


# -- 3. in-band commands in untrusted text printed by a trusted step -------------------------------------------

@needs_landlock
@pytest.mark.parametrize("stop", [True, False], ids=["stop-commands", "control"])
def test_stop_commands_in_an_artifact_do_not_switch_off_a_trusted_add_mask(root: Path, stop: bool) -> None:
    """A trusted step prints the untrusted step's report, then registers a fresh token with ::add-mask:: and
    uses it. A `::stop-commands::` line in the report (swallowed, so invisible in the log) switched the
    registration off: the token was printed in clear. Registration is never suspended now (masking more cannot
    leak). Control: the same job without the line masks the token."""
    token = "fresh-sess-Kq3vX9mTz7LpW2cR8nYb"  # not registered (the job's SECRET reversed is: rearranged_forms)
    report = "tests: 12 passed\\n::stop-commands::pwn\\n" if stop else "tests: 12 passed\\n"
    job = Job("inband")
    job.add_step("pr", f"printf '{report}' > \"$REACTORCIDE_ARTIFACTS_DIR/report.txt\"", trust="untrusted")
    job.add_step("deploy", f"cat \"$REACTORCIDE_ARTIFACTS_DIR/report.txt\"; T={token}; echo \"::add-mask::$T\"; "
                           "echo \"session token is $T\"", depends_on=["pr"])
    code, out = run(root, job)
    assert code == 0 and "[deploy] tests: 12 passed" in out, out
    assert "[deploy] session token is ***" in out, out
    assert not [f for f in fragments(token, 8) if f in out.replace(f"T={token}", "")], out


@needs_landlock
@needs_landlock
@pytest.mark.parametrize("report", ["tests: 12 passed", "tests: 12 passed::add-mask", "control"])
def test_untrusted_text_without_a_newline_does_not_hide_a_trusted_add_mask(root: Path, report: str) -> None:
    """An untrusted step's report with no final newline, printed by a trusted step just before its
    `::add-mask::` (GitHub recognises the command at a line start only), hid the command, and the fresh token
    printed next was in clear; one ending in a piece of the command (`...::add-mask`) made the value read
    `add-mask::T`. Control: the same step with `add_mask: false` prints the token (the test sees a leak)."""
    token = "other-sess-Jd5sP1xQw8HgT4kV6mZa"  # not registered
    job = Job("inband2")
    text = "tests: 12 passed" if report == "control" else report
    job.add_step("pr", f"printf '{text}' > \"$REACTORCIDE_ARTIFACTS_DIR/report.txt\"", trust="untrusted")
    job.add_step("deploy", f"cat \"$REACTORCIDE_ARTIFACTS_DIR/report.txt\"; T={token}; echo \"::add-mask::$T\"; "
                           "echo \"session token is $T\"", depends_on=["pr"], add_mask=report != "control")
    code, out = run(root, job)
    assert code == 0, out
    leaked = [f for f in fragments(token, 8) if f in out.replace(f"T={token}", "")]
    assert bool(leaked) == (report == "control"), out
    if report != "control":
        assert "[deploy] session token is ***" in out and "[deploy] tests: 12 passed\n" in out, out


# -- 4. parallel untrusted steps ---------------------------------------------------------------------------------

SLOW = ("mkdir \"$REACTORCIDE_ARTIFACTS_DIR/d\" && sleep 1.5; echo v=1 >> \"$GITHUB_OUTPUT\" && echo wrote-output; "
        "echo data > \"$REACTORCIDE_ARTIFACTS_DIR/d/slow.txt\" && echo wrote-artifact")


@needs_landlock
def test_a_parallel_untrusted_step_keeps_its_files_until_it_ends(root: Path) -> None:
    """Two untrusted steps at once: when the fast one ended, the hand-over clean-up gave the slow one's protocol
    files and its artifact directory to root while it still ran (`Permission denied`: the step failed). They are
    taken over once no untrusted step runs; a trusted step after both sees them taken over (the control)."""
    job = Job("parallel")
    job.add_step("fast", "sleep 0.3; echo fast", trust="untrusted")
    job.add_step("slow", SLOW, trust="untrusted")
    job.add_step("after", "echo \"out=$REACTORCIDE_UNTRUSTED_OUTPUT_SLOW_V\"; stat -c '%u %a' "
                          "\"$REACTORCIDE_ARTIFACTS_DIR/d\" \"$REACTORCIDE_ARTIFACTS_DIR/d/slow.txt\"",
                 depends_on=["fast", "slow"])
    code, out = run(root, job, concurrency=3)
    assert code == 0, out
    assert "[slow] wrote-output" in out and "[slow] wrote-artifact" in out, out
    assert "[after] out=1" in out, out
    if IS_ROOT:  # the take-over still happens, once both have ended
        assert "[after] 0 755\n[after] 0 644\n" in out, out


@needs_landlock
def test_parallel_untrusted_steps_at_the_start_share_one_copy(root: Path, monkeypatch) -> None:
    """The runner made its JobTrees lazily from each step's thread: two untrusted steps starting together could
    each make one, and the second copy of the source tree failed (`refused: [Errno 17] File exists: 'src'`).
    The windows are widened here (JobTrees takes 0.2 s to build, the copy 0.3 s to start) so that the race is met
    on every run; seen without that in 4 runs of 6 of a three-step job at the default concurrency."""
    real_init, real_copy = job_trees.JobTrees.__init__, paths.Workspace.copy_in

    def slow_init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(0.2)
        real_init(self, *args, **kwargs)

    def slow_copy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(0.3)
        return real_copy(self, *args, **kwargs)

    monkeypatch.setattr(job_trees.JobTrees, "__init__", slow_init)
    monkeypatch.setattr(paths.Workspace, "copy_in", slow_copy)
    (root / "src" / "file.txt").write_text("x")
    job = Job("start")
    for name in ("a", "b", "c"):
        job.add_step(name, "echo ok-$REACTORCIDE_STEP_NAME", trust="untrusted")
    code, out = run(root, job, concurrency=3)
    assert code == 0, out
    assert all(f"[{n}] ok-{n}" in out for n in "abc") and "refused" not in out, out


def test_control_git_refuses_a_repository_of_the_sandbox_uid() -> None:
    """Control for part 1: git's own check that the take-over defeated (as root, a repository owned by another
    uid is refused); unprivileged there is no other uid, which is why the `.git` must not cross at all."""
    if not IS_ROOT or shutil.which("git") is None:
        pytest.skip("needs root and git")
    with reachable_tempdir("rl-redteam3-git-") as path:
        subprocess.run(["git", "init", "-q", str(path / "r")], check=True)
        subprocess.run(["chown", "-R", "65534:65534", str(path / "r")], check=True)
        proc = subprocess.run(["git", "-C", str(path / "r"), "status"], capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(path)}, check=False)
        assert proc.returncode != 0 and "dubious ownership" in proc.stderr


# -- 5. metadata addresses of other clouds ------------------------------------------------------------------------

OTHER_CLOUDS = ["100.100.100.200", "::ffff:100.100.100.200", "fd20:ce::254", "fe80::a9fe:a9fe"]


@pytest.mark.parametrize("address", OTHER_CLOUDS)
def test_other_clouds_metadata_addresses_are_refused_in_a_network_list(address: str) -> None:
    """Alibaba Cloud's 100.100.100.200, GCP's IPv6 fd20:ce::254 and OpenStack's IPv6 fe80::a9fe:a9fe serve
    instance credentials as 169.254.169.254 does: a step's `network:` list may not name them."""
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(network.NetworkSpecError, match="metadata"):
        network.parse_network([f"{host}:80"])
    assert network.is_metadata(address)


def test_control_neighbours_of_the_metadata_addresses_stay_reachable() -> None:
    assert network.parse_network(["100.100.100.201:80", "[fd20:ce::253]:80"]).targets
    assert not network.is_metadata("100.100.100.199") and not network.is_metadata("8.8.8.8")


CONNECT = ("import socket,sys\ntry:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)"
           ".recv(8); print('REACHED', sys.argv[1])\nexcept OSError as e: print('BLOCKED', sys.argv[1], e)\n")


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="adding 100.100.100.200 to lo needs root")
@pytest.mark.skipif(nftables.library() is None, reason="network full cuts metadata off with nftables (not installed)")
@needs_landlock
def test_alibaba_metadata_address_unreachable_from_an_untrusted_step(root: Path) -> None:
    """Under the default network (`full`, the host rule on the sandbox uid) an untrusted step reached a server on
    Alibaba Cloud's metadata address. Control: a trusted step of the same job reaches it."""
    (root / "ci" / "connect.py").write_text(CONNECT)
    with metadata_address_on_lo("100.100.100.200"), serving("100.100.100.200", b"creds") as port:
        job = Job("metadata")
        command = f"/usr/bin/python3 -I {root}/ci/connect.py 100.100.100.200 {port}"
        job.add_step("pr", command, trust="untrusted")
        job.add_step("trusted", command, depends_on=["pr"])
        code, out = run(root, job)
    assert code == 0, out
    assert "[pr] BLOCKED 100.100.100.200" in out, out
    assert "[trusted] REACHED 100.100.100.200" in out, out


# -- 6. a confirmation oracle between untrusted steps -------------------------------------------------------------

@needs_landlock
def test_untrusted_steps_cannot_test_guesses_against_the_secrets(root: Path) -> None:
    """The PR's code in a build step writes 5 guesses of a low-entropy secret to GITHUB_ENV and GITHUB_OUTPUT; its
    test step sees every guess but the right one (dropped from its environment, `***` when substituted): one job
    run tests about 40,000 guesses (1 MiB of env file). Where the attacker reads the job's console (public CI
    logs) masking itself is the same oracle; as root the step cannot read its log, so this is the channel."""
    job = Job("oracle")
    job.add_step("build", "for pin in 1000 4711 9999; do echo \"G_$pin=pin-$pin-$pin\" >> \"$GITHUB_ENV\"; "
                          "echo \"g$pin=pin-$pin-$pin\" >> \"$GITHUB_OUTPUT\"; done", trust="untrusted")
    job.add_step("test", "env | grep -c '^G_' | sed 's/^/vars=/'; echo \"got=${{ steps.build.outputs.g4711 }}\" "
                         "| tr '*' S", trust="untrusted", depends_on=["build"])
    code, text = run(root, job, {"DB_PIN": "pin-4711-4711"}, secret_env_names=["DB_PIN"])
    assert code == 0, text
    assert "[test] vars=3" in text and "[test] got=SSS" not in text, text


@needs_landlock
def test_a_trusted_steps_secret_still_never_reaches_an_untrusted_step(root: Path) -> None:
    """The control of the test above: what a TRUSTED step writes (a secret copied into GITHUB_ENV and
    GITHUB_OUTPUT) is still dropped and masked for a later untrusted step; only untrusted producers' values
    pass as written."""
    job = Job("oracle-control")
    job.add_step("auth", "echo \"G_PIN=$DB_PIN\" >> \"$GITHUB_ENV\"; echo \"pin=$DB_PIN\" >> \"$GITHUB_OUTPUT\"; "
                         "echo G_OK=fine >> \"$GITHUB_ENV\"")
    job.add_step("test", "env | grep '^G_' | sed 's/^/var:/'; echo \"got=${{ steps.auth.outputs.pin }}\" | tr '*' S",
                 trust="untrusted", depends_on=["auth"])
    code, text = run(root, job, {"DB_PIN": "pin-4711-4711"}, secret_env_names=["DB_PIN"])
    assert code == 0, text
    assert "[test] var:G_OK=fine" in text and "[test] var:G_PIN" not in text and "[test] got=SSS" in text, text
    assert not [f for f in fragments("pin-4711-4711", 6) if f in text], text


@needs_landlock
@pytest.mark.parametrize("trust", ["untrusted", "trusted"], ids=["untrusted", "control"])
def test_an_encoded_secret_in_a_steps_own_env_never_reaches_an_untrusted_step(root: Path, trust: str) -> None:
    """What passes as written to an untrusted step (`known_to_step`: what untrusted steps wrote, the step's own
    env) must not carry a registered secret in an encoded form either: a job file's `env: {AUTH: <base64 of
    the token>}` (docker's auth) is dropped for an untrusted step. Control: a trusted step gets it; the step
    prints it reversed, so the masker cannot hide a leak from the test."""
    import base64

    encoded = base64.b64encode(b"ci:" + SECRET.encode()).decode()
    job = Job("encoded-env")
    job.add_step("use", "printf '%s' \"${AUTH:-none}\" | rev; echo", trust=trust, env={"AUTH": encoded})
    code, out = run(root, job, {"DB_PIN": SECRET}, secret_env_names=["DB_PIN"])
    assert code == 0, out
    assert (encoded[::-1] in out) == (trust == "trusted"), out


# -- 7. plugins from the hand-over area ---------------------------------------------------------------------------

PLUGIN = "open({marker!r}, 'w').write('x')\n"


@pytest.mark.parametrize("where", ["artifacts/plugins", "trusted-plugins"], ids=["hand-over", "control"])
def test_plugins_never_load_from_the_hand_over_area(root: Path, where: str) -> None:
    """Plugins run inside the runner with every secret; the loader refused plugin directories in src and the
    untrusted copy but not in /job/artifacts, where an untrusted step's file (root-owned after the take-over, so
    the owner check passes) sits, e.g. for a nested `runnerlib run-job --plugin-dir $REACTORCIDE_ARTIFACTS_DIR/..`.
    Control: the same file in a directory of the workspace that untrusted steps cannot write loads."""
    plugins = root / where
    plugins.mkdir(parents=True)
    marker = root / "PWNED-plugin"
    (plugins / "evil.py").write_text(PLUGIN.format(marker=str(marker)))
    for p in (plugins, plugins.parent):
        os.chmod(p, 0o755)
    job = Job("plugins")
    job.add_step("a", "true")
    code, out = run(root, job, plugin_dirs=[str(plugins)])
    if where == "trusted-plugins":
        assert marker.exists(), out
    else:
        assert not marker.exists(), out
        assert code != 0 and "artifacts" in out and "refused" in out, out


# -- 8. terminal control in untrusted output --------------------------------------------------------------------

@needs_landlock
@pytest.mark.parametrize("trust", ["untrusted", "trusted"])
def test_untrusted_output_cannot_redraw_runnerlib_lines(root: Path, trust: str) -> None:
    """A bare CR or a cursor-moving CSI (ESC[1A up, ESC[2K erase) in a step's output redrew a line of
    runnerlib's own on a terminal: an untrusted step wrote a forged `finished (ok)` over its line, and a trusted
    step printing an untrusted report does the same. On the console a bare CR ends the line (its own prefix
    follows) and other escapes than colours show as `^[`. Control: the step's log file keeps the bytes (the
    attack reaches the console unchanged without the filter)."""
    if trust == "untrusted" and not caps.landlock_fs:
        pytest.skip("untrusted steps need Landlock here")
    job = Job("console")
    job.add_step("pr", "printf 'x\\r==> 09:00:00 [deploy] finished (ok)\\n\\033[1A\\033[2Kgone \\033[31mred\\033[0m\\n'",
                 trust=trust)
    code, out = run(root, job)
    assert code == 0, out
    assert "\r" not in out and "\x1b[1A" not in out and "\x1b[2K" not in out, out
    assert "[pr] x\n[pr] ==> 09:00:00 [deploy] finished (ok)\n" in out, out
    assert "[pr] ^[[1A^[[2Kgone \x1b[31mred\x1b[0m\n" in out, out  # colours stay
    log = (root / "artifacts" / "logs" / "pr.log").read_bytes()
    assert b"x\r==> 09:00:00" in log and b"\x1b[1A\x1b[2Kgone" in log, log  # the control: the raw bytes


# -- 9. a trusted step's credentials in the source tree ------------------------------------------------------------

@needs_landlock
@pytest.mark.parametrize("protected", [True, False], ids=["protected", "control"])
def test_a_trusted_steps_credentials_in_src_do_not_reach_the_untrusted_copy(root: Path, monkeypatch,
                                                                             protected: bool) -> None:
    """The untrusted copy is made from /job/src when the first untrusted step starts, after the trusted steps
    before it: an `.npmrc` with the token that a trusted step wrote there was copied to the PR's code (which read
    it, and printed it split by `od` so that no masker could see it). Files changed since the steps began that hold
    a registered secret stay out of the copy. Control: without that, the PR's code reads the token."""
    if not protected:
        monkeypatch.setattr(copy_secrets, "leave_out_secret_files", lambda *a, **k: [])
    job = Job("npmrc")
    job.add_step("auth", "cd \"$REACTORCIDE_SOURCE_DIR\" && echo \"//registry.npmjs.org/:_authToken=$DEPLOY_TOKEN\" "
                         "> .npmrc && echo 'registry=https://registry.npmjs.org/' > .npmrc-plain")
    job.add_step("test", "cat .npmrc-plain; od -c .npmrc | tr -d ' \\n' | sed 's/^/npmrc:/'; echo", trust="untrusted",
                 depends_on=["auth"])
    code, out = run(root, job, secret_env_names=["DEPLOY_TOKEN"])
    copy = root / ".untrusted" / "src" / ".npmrc"
    assert code == 0, out
    assert "[test] registry=https://registry.npmjs.org/" in out, out  # what holds no secret is copied
    if protected:
        assert not copy.exists(), out
        assert "left out of the untrusted copy: .npmrc (a trusted step wrote a secret into it)" in out, out
        assert "_authToken" not in out.split("[test] $", 1)[-1].split("\n", 1)[1], out
    else:
        assert SECRET in copy.read_text(), out


# -- 10. the worker's REACTORCIDE_JOB_DIR -------------------------------------------------------------------------

@needs_landlock
@pytest.mark.parametrize("protected", [True, False], ids=["protected", "control"])
def test_a_job_dir_naming_the_source_tree_does_not_put_trusted_steps_there(root: Path, monkeypatch,
                                                                           protected: bool) -> None:
    """The worker sets REACTORCIDE_JOB_DIR for every job, usually to /job/src itself. A named job directory was
    kept for trusted steps, so they ran in the pull request's tree again and `python3 -c 'import json'` imported
    the json.py it ships (case 3). A job dir equal to the source tree is the default: trusted steps start in
    /job/ci. Control: with the named directory kept as before, the PR's module is imported."""
    if not protected:
        monkeypatch.setattr(job_trees, "_job_dir_is_default",
                            lambda config: config.job_dir is None or config.origin("job_dir").startswith("default"))
    (root / "src" / "json.py").write_text("print('PR json.py imported')\n")
    job = Job("jobdir")
    job.add_step("pr", "true", trust="untrusted")
    job.add_step("deploy", "pwd; python3 -c 'import json'", depends_on=["pr"])
    code, out = run(root, job, job_dir=str(root / "src"), code_dir=str(root / "src"))
    assert code == 0, out
    if protected:
        assert f"[deploy] {root}/ci\n" in out and "PR json.py imported" not in out, out
    else:
        assert "[deploy] PR json.py imported" in out, out


# -- 11. a repository inside an untrusted archive ----------------------------------------------------------------

@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.parametrize("protected", [True, False], ids=["protected", "control"])
def test_a_tarball_source_brings_no_repository_for_trusted_git(root: Path, tmp_path: Path, monkeypatch,
                                                               protected: bool) -> None:
    """The pull request's tree as a tarball (`--source-type tarball`) may hold a `.git` with core.fsmonitor:
    extracted by root into /job/src, git did not refuse it, and a trusted `git status` there ran the command
    with the secrets. Members in `.git`/`.hg` are left out now. Control: extracted, the command runs."""
    if not protected:
        monkeypatch.setattr(tarball, "VCS_NAMES", frozenset())
    marker = root / "PWNED-tarball"
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "f.txt").write_text("x")
    subprocess.run(["git", "init", "-q", str(proj)], check=True)
    subprocess.run(["git", "config", "-f", str(proj / ".git" / "config"), "core.fsmonitor",
                    f"echo \"$DEPLOY_TOKEN\" > {marker} #"], check=True)
    archive = tmp_path / "proj.tar"
    subprocess.run(["tar", "cf", str(archive), "-C", str(proj), "."], check=True)
    shutil.rmtree(root / "src")
    job = Job("tarball")
    job.add_step("status", "cd \"$REACTORCIDE_SOURCE_DIR\" && git status --short; true")
    code, out = run(root, job, source_type="tarball", source_url=f"file://{archive}")
    assert code == 0, out
    if protected:
        assert not marker.exists() and not (root / "src" / ".git").exists(), out
        assert (root / "src" / "f.txt").exists() and "left out" in out, out
    else:
        assert marker.read_text().strip() == SECRET, out


# -- 12. limits raised by a job file from the untrusted tree -----------------------------------------------------

@pytest.mark.parametrize("limits", ["{pids: 1000000, memory: 1T, cpu_seconds: 9999999}", "{pids: 64, memory: 256M}"],
                         ids=["raised", "control-lowered"])
def test_a_job_file_from_the_untrusted_tree_cannot_raise_its_limits(root: Path, limits: str) -> None:
    """`run-job src/job.yaml --untrusted` runs a pull request's job file sandboxed; its step's `limits:` lifted
    the untrusted defaults (cpu 9,999,999 s, file size 1 TiB, 1M processes: the fork-bomb and memory-hog guards of
    case 9). Raising is refused naming the limits; lowering (the control) is taken."""
    (root / "src" / "job.yaml").write_text("name: prjob\nsteps:\n  - name: t\n    trust: untrusted\n"
                                           f"    limits: {limits}\n    command: echo ran\n")
    proc = subprocess.run([str(Path(sys.executable).parent / "runnerlib"), "run-job", str(root / "src" / "job.yaml"),
                           "--workspace-root", str(root), "--untrusted"], capture_output=True, text=True,
                          env={**ENV, "HOME": str(root)}, timeout=120)
    if "1000000" in limits:
        assert proc.returncode == 78, proc
        assert "may not raise its limits above the untrusted defaults (pids=1000000 > 4096" in proc.stderr, proc
        assert "[t] ran" not in proc.stdout, proc
    else:
        assert proc.returncode == 0 and "[t] ran" in proc.stdout, proc


# -- 13. what an earlier job's untrusted step left in a reused workspace -------------------------------------------

@pytest.mark.parametrize("protected", [True, False], ids=["protected", "control"])
def test_a_reused_workspace_hand_over_area_is_cleaned_before_the_first_trusted_step(root: Path, monkeypatch,
                                                                                    protected: bool) -> None:
    """A runner killed during an untrusted step never cleans the hand-over area; a next job in the same workspace
    whose first step is trusted met the step's symlink (`coverage.txt -> ../victim`) and wrote through it. The
    area is cleaned before the first trusted step of a job when an earlier job's untrusted steps used it (their
    step-file directory is there; a trusted-only job's area is left as it is). Control: without that, the victim
    is rewritten."""
    if not protected:
        real = job_trees.JobTrees.__init__

        def not_dirty(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            real(self, *args, **kwargs)
            self._dirty = False  # round two: nothing to clean before the job's own untrusted steps ran

        monkeypatch.setattr(job_trees.JobTrees, "__init__", not_dirty)
    victim = root / "victim"
    victim.write_text("original\n")
    (root / "artifacts" / ".runnerlib-steps" / "pr").mkdir(parents=True)  # the killed job's untrusted step 'pr'
    os.symlink("../victim", root / "artifacts" / "coverage.txt")
    job = Job("reused")
    job.add_step("report", "echo 'coverage 91%' > \"$REACTORCIDE_ARTIFACTS_DIR/coverage.txt\"")
    code, out = run(root, job)
    assert code == 0, out
    if protected:
        assert victim.read_text() == "original\n" and "hand-over: removed" in out, out
    else:
        assert victim.read_text() == "coverage 91%\n", out


# -- 14. symlinks the pull request commits ------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.parametrize("protected", [True, False], ids=["protected", "control"])
def test_a_pull_requests_symlink_out_of_src_is_not_followed_by_a_trusted_step(root: Path, tmp_path: Path,
                                                                              monkeypatch, protected: bool) -> None:
    """A PR commits `VERSION -> /root/.ssh/id_ed25519` (here: a runner-only file); git checks it out as it is, and
    a trusted step that reads the tree (`cat VERSION`) printed the file, into the log the PR author reads. Links
    leading out of the untrusted source are removed after preparation; links inside it stay. Control: kept,
    the trusted step prints the runner-only file."""
    if not protected:
        monkeypatch.setattr(dual, "remove_outward_links", lambda *a, **k: [])
    private = root / "runner-only"
    private.write_text("PRIVATE-KEY-MATERIAL\n")
    os.chmod(private, 0o600)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README").write_text("readme\n")
    os.symlink(str(private), repo / "VERSION")
    os.symlink("README", repo / "README.link")
    git = {**ENV, "HOME": str(tmp_path), "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@x",
           "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@x"}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "pr"]):
        subprocess.run(["git", *args], cwd=repo, env=git, check=True, capture_output=True)
    shutil.rmtree(root / "src")
    job = Job("links")
    job.add_step("release", "cd \"$REACTORCIDE_SOURCE_DIR\" && cat README.link; cat VERSION; true")
    code, out = run(root, job, source_type="git", source_url=f"file://{repo}")
    assert code == 0, out
    assert "[release] readme" in out, out  # a link inside the tree stays
    if protected:
        assert "PRIVATE-KEY-MATERIAL" not in out and "removed 1 symlink(s) leading out" in out, out
        assert not os.path.lexists(root / "src" / "VERSION"), out
    else:
        assert "[release] PRIVATE-KEY-MATERIAL" in out, out
