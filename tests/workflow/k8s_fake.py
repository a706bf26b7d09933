"""A stateful fake Kubernetes for the submit/watch/log/cancel flow: kmock's emulator (an in-memory API server
on 127.0.0.1, reached through the official client) plus a small 'kubelet' of our own that plays the Job
controller: for each new Job it creates the pod, runs the Job's container command here as a process (the
pod's /job emptyDir is a temporary directory), serves its log, and sets the Job's and pod's status. When a
Job is deleted it stops the process. No real cluster can run on this machine; this is what stands in.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
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


class FakeCluster:
    """Context manager: `with FakeCluster() as cluster: cluster.kubeconfig, cluster.batch, cluster.logs`."""

    def __init__(self, workdir: Path, secrets: dict[str, dict[str, str]] | None = None) -> None:
        self.workdir = workdir
        self.secrets = secrets or {}
        self.logs: dict[str, bytearray] = {}
        self.done: dict[str, bool] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.deleted: list[str] = []
        self.delete_bodies: list[Any] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._holder: dict[str, Any] = {}

    # --- the API server ---------------------------------------------------------------------------------------

    async def _serve(self) -> None:
        emulator = kmock.KubernetesEmulator()
        for resource in ("batch/v1/jobs", "v1/pods", "v1/secrets"):
            emulator.resources[resource] = {}
        emulator[kmock.subresource("log")] << self._serve_log
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

    def _env(self, container: Any, job_root: Path) -> dict[str, str]:
        env = {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", os.defpath),
               "HOME": str(job_root / "home"), "LANG": "C.UTF-8"}
        for item in container.env or []:
            if item.value_from is not None:
                ref = item.value_from.secret_key_ref
                env[item.name] = self.secrets[ref.name][ref.key]
            else:
                value = item.value or ""
                # The pod's emptyDir at /job is this job's directory here.
                env[item.name] = str(job_root) + value[4:] if value == "/job" or value.startswith("/job/") \
                    else value
        return env

    def _start(self, name: str, job: Any) -> None:
        container = job.spec.template.spec.containers[0]
        job_root = Path(tempfile.mkdtemp(prefix=f"{name[:20]}-", dir=self.workdir))
        (job_root / "home").mkdir()
        env = self._env(container, job_root)
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
