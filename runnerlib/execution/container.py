"""Container mode: a step's command run in a container of the job's image, through Podman or Docker.

The runner prepares sources on the host as usual, then runs each step as `ENGINE run ... IMAGE CMD`, a
trusted process of its own whose output goes through the same masking as any step's. What the container
gets, and why:
- the workspace at /job, and /job/ci mounted again read-only over it (the trusted CI code stays unchanged
  whatever the step does);
- secrets by NAME only: `-e NAME` on the engine's command line, the value in the engine's own environment
  (never on any process's command line, where /proc shows it to every local user);
- hardening by default: every capability dropped, no-new-privileges, a pids limit, an init process (so a
  step that ignores SIGTERM as PID 1 still stops), the step's network policy and memory limit;
- untrusted steps run as uid 65534 with no secret and no registration socket at all;
- a name of its own, removed (`rm -f`) after the step whatever happened, so nothing is left behind.

Example::

    engine = ContainerEngine.find("podman")
    step = ContainerStep(engine, image="python:3.12", workspace="/job", trusted=True)
    argv = step.argv("pytest -q", name=new_container_name("build"), cwd="/job/src", env_names=["DEPLOY_TOKEN"])
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["ENGINES", "ContainerEngine", "ContainerError", "ContainerStep", "new_container_name"]

ENGINES = ("podman", "docker")
SANDBOX_USER = "65534:65534"
DEFAULT_PIDS = 4096
LABEL = "io.reactorcide.runnerlib=step"
# Variables that describe the host, not the job: the image has its own.
HOST_ONLY = frozenset({"PATH", "HOME", "TMPDIR", "PWD", "OLDPWD", "SHELL", "USER", "LOGNAME", "HOSTNAME",
                       "SHLVL", "_", "TERM", "LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV"})
_SIZE_RE = re.compile(r"^\d+[bkmg]?$", re.IGNORECASE)


class ContainerError(RuntimeError):
    """Container mode cannot run as asked; the message says what is missing."""


@dataclass(frozen=True)
class ContainerEngine:
    """A container engine CLI found on PATH (podman or docker)."""

    name: str
    path: str

    @classmethod
    def find(cls, preferred: str | None = None, *, search_path: str | None = None) -> ContainerEngine:
        """The engine named (podman or docker), or the first of them on PATH; ContainerError if none is.

        >>> ContainerEngine.find("podman")  # doctest: +SKIP
        ContainerEngine(name='podman', path='/usr/bin/podman')
        """
        if preferred not in (None, "", "auto") and preferred not in ENGINES:
            raise ContainerError(f"container_engine: {preferred!r} is not one of {', '.join(ENGINES)}")
        names = ENGINES if preferred in (None, "", "auto") else (preferred,)
        for name in names:
            path = shutil.which(name, path=search_path)
            if path:
                return cls(name, path)
        wanted = " or ".join(names)
        raise ContainerError(f"container mode needs a container engine: {wanted} is not on PATH "
                             "(install Debian's podman, or run runnerlib inside the job container instead)")

    def remove(self, name: str) -> None:
        """Remove the container `name` if it still exists (stopping it at once); errors are ignored."""
        subprocess.run([self.path, "rm", "-f", "-t", "0", name] if self.name == "podman"
                       else [self.path, "rm", "-f", name],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60, check=False)

    def exists(self, name: str) -> bool:
        result = subprocess.run([self.path, "container", "inspect", name], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)
        return result.returncode == 0


def new_container_name(step: str) -> str:
    """A unique container name for one attempt of a step."""
    cleaned = re.sub(r"[^a-zA-Z0-9_.-]+", "-", step).strip("-.") or "step"
    return f"runnerlib-{cleaned[:40]}-{os.urandom(5).hex()}"  # not uuid: its import costs a job ~2 ms


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass(frozen=True)
class ContainerStep:
    """How steps of a job run in containers of `image`: the engine's argv and environment for one step.

    network: "full" (the engine's default network), "none", or "loopback" (the container's own loopback
    only: the host's is another network namespace). memory: an engine size ("512m"). pids: a pids limit.
    """

    engine: ContainerEngine
    image: str
    workspace: str
    trusted: bool = True
    ci_dir: str | None = None
    network: str = "full"
    memory: str | None = None
    cpus: str | None = None
    pids: int = DEFAULT_PIDS

    def __post_init__(self) -> None:
        if not self.image or self.image.startswith("-") or any(c.isspace() for c in self.image):
            raise ContainerError(f"runner_image: {self.image!r} is not an image reference")
        if self.network not in ("full", "none", "loopback"):
            raise ContainerError(f"network: {self.network!r} cannot be enforced in container mode "
                                 "(full, none or loopback)")
        if self.memory is not None and not _SIZE_RE.fullmatch(self.memory):
            raise ContainerError(f"memory: {self.memory!r} is not a size such as 512m or 2g")

    def in_container(self, value: str) -> str:
        """A host path under the workspace as the container sees it (/job/...); other values unchanged."""
        root = os.path.normpath(self.workspace)
        if value and value.startswith("/") and _under(os.path.normpath(value), root):
            return "/job" + os.path.normpath(value)[len(root):]
        return value

    def argv(self, command: str | list[str], *, name: str, cwd: str | None, env_names: Iterable[str],
             mounts: Iterable[str] = (), read_only: Mapping[str, str] | None = None,
             extra_args: Iterable[str] = ()) -> list[str]:
        """`ENGINE run ...` for one step. Values of `env_names` come from the engine's environment; `mounts`
        are host directories shown at the same path, `read_only` maps host directories to where the
        container sees them, read-only; `extra_args` (engine options such as --user or --cap-add) go before
        the image."""
        e = self.engine
        args = [e.path, "run", "--rm", "--name", name, "--label", LABEL, "--init", "--cap-drop=ALL",
                "--security-opt=no-new-privileges", f"--pids-limit={self.pids}",
                "-v", f"{os.path.normpath(self.workspace)}:/job"]
        ci = self.ci_dir
        if ci and os.path.isdir(ci) and _under(os.path.normpath(ci), os.path.normpath(self.workspace)):
            args += ["-v", f"{os.path.normpath(ci)}:{self.in_container(ci)}:ro"]
        for mount in mounts:
            args += ["-v", f"{mount}:{mount}"]
        for host, target in (read_only or {}).items():
            args += ["-v", f"{host}:{target}:ro"]
        if self.network in ("none", "loopback"):
            args.append("--network=none")
        if self.memory:
            args.append(f"--memory={self.memory}")
        if self.cpus:
            args.append(f"--cpus={self.cpus}")
        if not self.trusted:
            args += ["--user", SANDBOX_USER]
        if cwd:
            args += ["-w", self.in_container(cwd)]
        for env_name in sorted(set(env_names)):
            args += ["-e", env_name]
        args += list(extra_args)
        args.append(self.image)
        args += ["sh", "-c", command] if isinstance(command, str) else list(command)
        return args

    def engine_env(self, env: Mapping[str, str], names: Iterable[str]) -> tuple[dict[str, str], list[str]]:
        """(the engine process's environment, the names forwarded into the container).

        The engine keeps the runner's own variables (PATH, HOME, XDG_*: it needs them to find its storage);
        each forwarded name holds the step's value, with workspace paths as the container sees them.
        """
        forwarded = [n for n in names if n in env and n not in HOST_ONLY]
        engine_env = {k: v for k, v in os.environ.items() if k in HOST_ONLY or k.startswith(("XDG_", "CONTAINERS_",
                                                                                              "DOCKER_"))}
        engine_env.setdefault("PATH", os.defpath)
        for name in forwarded:
            engine_env[name] = self.in_container(env[name])
        return engine_env, forwarded
