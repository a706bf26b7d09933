"""A stateful fake Kubernetes for the submit/watch/log/cancel flow: kmock's emulator (an in-memory API server
on 127.0.0.1, reached through the official client) plus a small 'kubelet' of our own that plays the Job
controller: for each new Job it creates the pod, runs the Job's container command here as a process (the
pod's /job emptyDir is a temporary directory), serves its log, and sets the Job's and pod's status. When a
Job is deleted it stops the process. No real cluster can run on this machine; this is what stands in.

ConfigMap volumes are mounted as the kubelet mounts them, from the API object: the container does not start
until the ConfigMap exists (unless the volume is optional); its keys are written into the pod's directory
(volumes/<volume name>, where the container's environment, like /job, points instead of the mount path) in
the kubelet's AtomicWriter layout (a timestamped directory, a `..data` symlink to it swapped atomically, one
symlink per key into `..data`), with the volume's defaultMode; and they are brought up to date while the pod
runs (every 0.1 s here; a real kubelet takes up to a minute or two). What the fake cannot do is make the
mount read-only for a root process: each pod has its own copy, so a write reaches neither the API object nor
another pod, as on a node.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import kmock
from kubernetes import client

NAMESPACE = "default"
KUBELET_AGENT = "fake-kubelet"


class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator, which tracks POST, PATCH and DELETE, with PUT on a named object too: the official
    client's replace_namespaced_* (RBAC verb `update`) replaces the whole stored object, as the API server does."""

    async def _handle(self, request: Any) -> Any:
        if request.method == kmock.method.PUT and request.resource is not None and request.name is not None:
            key = (request.resource, request.namespace, request.name)
            async with self._lock:
                if key not in self._objects or self._objects[key].deleted:
                    raise kmock.KubernetesObjectNotFoundError()
                self._objects[key].create(request.data)  # a new version: the whole object, not a merge
                await self._buses[request.resource].put({"type": "MODIFIED", "object": self._objects[key].raw})
        return await super()._handle(request)

    def _serve_replaced(self, request: Any) -> Any:
        return self._objects[(request.resource, request.namespace, request.name)].raw


class FakeCluster:
    """Context manager: `with FakeCluster() as cluster: cluster.kubeconfig, cluster.batch, cluster.logs`."""

    def __init__(self, workdir: Path, secrets: dict[str, dict[str, str]] | None = None) -> None:
        self.workdir = workdir
        self.secrets = secrets or {}
        self.logs: dict[str, bytearray] = {}
        self.done: dict[str, bool] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pod_dirs: dict[str, Path] = {}  # Job name -> its pod's directory (the /job emptyDir)
        self._mounted: dict[str, dict[str, Any]] = {}  # Job name -> {volume name: the data it shows}
        self.deleted: list[str] = []
        self.delete_bodies: list[Any] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._holder: dict[str, Any] = {}

    # --- the API server ---------------------------------------------------------------------------------------

    async def _serve(self) -> None:
        emulator = Emulator()
        for resource in ("batch/v1/jobs", "v1/pods", "v1/secrets", "v1/configmaps"):
            emulator.resources[resource] = {}
        emulator[kmock.subresource("log")] << self._serve_log
        emulator[kmock.method.PUT] << emulator._serve_replaced
        async with kmock.Server(emulator), emulator:
            self._holder["emulator"] = emulator
            self._holder["stop"] = asyncio.Event()
            self._holder["loop"] = asyncio.get_running_loop()
            self._ready.set()
            await self._holder["stop"].wait()

    def _serve_log(self, request: Any) -> Any:
        name = request.name

        async def follow() -> Any:
            sent = 0
            while True:
                data = bytes(self.logs.get(name, b""))
                if len(data) > sent:
                    yield data[sent:]
                    sent = len(data)
                elif self.done.get(name, True) or self._stop.is_set():
                    if sent == 0:
                        yield b""
                    return
                await asyncio.sleep(0.05)

        return follow()

    def __enter__(self) -> FakeCluster:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the fake API server did not start")
        self.url = str(self._holder["emulator"].url).rstrip("/")
        configuration = client.Configuration()
        configuration.host = self.url
        self.api = client.ApiClient(configuration)
        self.api.user_agent = KUBELET_AGENT  # tells the fake's own requests from the runner's
        self.batch = client.BatchV1Api(self.api)
        self.core = client.CoreV1Api(self.api)
        for name, data in self.secrets.items():
            self.core.create_namespaced_secret(NAMESPACE, {
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})
        self.kubeconfig = self.workdir / "kubeconfig"
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
            f"clusters: [{{name: fake, cluster: {{server: '{self.url}'}}}}]\n"
            "users: [{name: u, user: {token: not-a-real-token}}]\n"
            "contexts: [{name: fake, context: {cluster: fake, user: u, namespace: default}}]\n")
        self._kubelet = threading.Thread(target=self._kubelet_loop, daemon=True)
        self._kubelet.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):  # it may end (and be reaped) meanwhile
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._kubelet.join(timeout=10)
        loop, stop = self._holder["loop"], self._holder["stop"]
        loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout=10)

    # --- the kubelet and Job controller -------------------------------------------------------------------------

    def requests(self) -> list[Any]:
        """Every request the API server received (kmock records them), oldest first."""
        return list(self._holder["emulator"])

    def runner_requests(self) -> list[Any]:
        """The requests that did not come from the fake itself (its kubelet and set-up): the runner's."""
        return [r for r in self.requests() if r.headers.get("User-Agent") != KUBELET_AGENT]

    def jobs(self) -> dict[str, Any]:
        return {j.metadata.name: j for j in self.batch.list_namespaced_job(NAMESPACE).items}

    def _kubelet_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._kubelet_pass()
            except Exception as exc:  # noqa: BLE001 - keep playing the controller; the test sees the effect
                print(f"fake kubelet: {exc!r}", file=sys.stderr)
            time.sleep(0.1)

    def _kubelet_pass(self) -> None:
        if True:
            current = self.jobs()
            for name, job in current.items():
                if name not in self.procs:
                    self._start(name, job)
            for name, proc in list(self.procs.items()):
                if name not in current and name not in self.deleted:
                    self.deleted.append(name)
                    if proc.poll() is None:
                        with contextlib.suppress(ProcessLookupError):  # it may end (and be reaped) meanwhile
                            os.killpg(proc.pid, signal.SIGTERM)
                    self.done[f"{name}-pod"] = True
                    self.core.delete_namespaced_pod(f"{name}-pod", NAMESPACE)
                elif name in current and not self.done.get(f"{name}-pod", True) and proc.poll() is not None:
                    self._complete(name, proc.returncode)
                elif name in current and proc.poll() is None:
                    self._mount_configmaps(name, current[name].spec.template.spec)

    def config_map(self, name: str) -> Any:
        """The ConfigMap `name` as the API server has it, or None."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self.core.read_namespaced_config_map(name, NAMESPACE)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _mount_configmaps(self, name: str, pod_spec: Any) -> bool:
        """Project the pod's configMap volumes into its directory from the API objects; False while one that
        is not optional is missing (the kubelet keeps such a container from starting)."""
        for volume in pod_spec.volumes or []:
            source = volume.config_map
            if source is None:
                continue
            configmap = self.config_map(source.name)
            if configmap is None:
                if source.optional:
                    continue
                return False
            data = dict(configmap.data or {})
            if self._mounted.setdefault(name, {}).get(volume.name) != data:
                _atomic_write(self.pod_dirs[name] / "volumes" / volume.name, data,
                              source.default_mode if source.default_mode is not None else 0o644)
                self._mounted[name][volume.name] = data
        return True

    def _env(self, pod_spec: Any, job_root: Path) -> dict[str, str]:
        container = pod_spec.containers[0]
        env = {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", os.defpath),
               "HOME": str(job_root / "home"), "LANG": "C.UTF-8"}
        # Where the container's mounts are here: the pod's emptyDir at /job is this job's directory, a
        # ConfigMap volume its volumes/<name>. A value under a mount path points there instead.
        projected = {v.name for v in pod_spec.volumes or [] if v.config_map is not None}
        places = {m.mount_path: str(job_root / "volumes" / m.name) for m in container.volume_mounts or []
                  if m.name in projected}
        places["/job"] = str(job_root)
        for item in container.env or []:
            if item.value_from is not None:
                ref = item.value_from.secret_key_ref
                env[item.name] = self.secrets[ref.name][ref.key]
            else:
                value = item.value or ""
                for mount in sorted(places, key=len, reverse=True):
                    if value == mount or value.startswith(mount + "/"):
                        value = places[mount] + value[len(mount):]
                        break
                env[item.name] = value
        return env

    def _start(self, name: str, job: Any) -> None:
        container = job.spec.template.spec.containers[0]
        if name not in self.pod_dirs:
            self.pod_dirs[name] = Path(tempfile.mkdtemp(prefix=f"{name[:20]}-", dir=self.workdir))
            (self.pod_dirs[name] / "home").mkdir()
        job_root = self.pod_dirs[name]
        if not self._mount_configmaps(name, job.spec.template.spec):
            return  # ContainerCreating: tried again at the next pass
        env = self._env(job.spec.template.spec, job_root)
        pod = f"{name}-pod"
        self.core.create_namespaced_pod(NAMESPACE, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "labels": {"job-name": name, "batch.kubernetes.io/job-name": name}},
            "spec": job.spec.template.spec.to_dict() if hasattr(job.spec.template.spec, "to_dict") else {},
            "status": {"phase": "Running"}})
        argv = [sys.executable if container.command[0] == "python" else container.command[0],
                *container.command[1:]]
        self.logs[pod] = bytearray()
        self.done[pod] = False
        proc = subprocess.Popen(argv, env=env, cwd=str(job_root), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        threading.Thread(target=self._collect, args=(pod, proc), daemon=True).start()

    def _collect(self, pod: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
            self.logs[pod].extend(chunk)
        proc.wait()

    def _complete(self, name: str, code: int) -> None:
        pod = f"{name}-pod"
        time.sleep(0.2)  # let _collect take the last output
        self.done[pod] = True
        ok = code == 0
        self.core.patch_namespaced_pod_status(pod, NAMESPACE, {"status": {"phase": "Succeeded" if ok else "Failed"}})
        condition = {"type": "Complete" if ok else "Failed", "status": "True"}
        self.batch.patch_namespaced_job_status(name, NAMESPACE, {"status": {
            "succeeded": 1 if ok else 0, "failed": 0 if ok else 1, "conditions": [condition]}})

    def wait_for(self, predicate: Any, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting on the fake cluster")
            time.sleep(0.1)


def _atomic_write(directory: Path, data: dict[str, str], mode: int) -> None:
    """Write `data` (key -> text) into `directory` as the kubelet's AtomicWriter does: the files go to a new
    hidden timestamped directory, `..data` is switched to it by renaming a new symlink over it (atomic), each
    key is a symlink to `..data/<key>`, and the previous timestamped directory is removed."""
    directory.mkdir(parents=True, exist_ok=True)
    data_link = directory / "..data"
    old = os.readlink(data_link) if data_link.is_symlink() else None
    version = Path(tempfile.mkdtemp(prefix=time.strftime("..%Y_%m_%d_%H_%M_%S."), dir=directory))
    for key, text in data.items():
        (version / key).write_text(text)
        os.chmod(version / key, mode)
    os.chmod(version, 0o755)
    tmp_link = directory / "..data_tmp"
    os.symlink(version.name, tmp_link)
    os.rename(tmp_link, data_link)
    for key in data:
        if not (directory / key).is_symlink():
            os.symlink(f"..data/{key}", directory / key)
    if old is not None:
        shutil.rmtree(directory / old)
