"""A test kubelet: runs the pods the API server is given, with the local sandbox, and writes their
status back, as a node's kubelet would.

It watches the emulated API server's pods; for each new one it schedules (node resources, taints,
node selector, bound volume claims), "pulls" its images (a known set; any other image waits in
ErrImagePull/ImagePullBackOff for ever), mounts its volumes on host folders (a claim is a
folder, a subPath a folder below it, a Secret's items are files, an emptyDir a fresh folder),
then runs its init containers in order and its containers, each command in a bubblewrap sandbox
(engine_svc/infra/sandbox.py) as uid 65534 with a read-only root. A container's memory limit is
a cgroup (engine_svc/infra/cgroups.py) whose OOM kill is reported as OOMKilled; the pod's
activeDeadlineSeconds ends it as DeadlineExceeded; a NetworkPolicy that selects the pod and
allows no egress leaves it without network. stdout and stderr go to the container's log, which
the API server serves; the termination message file is read back into the status.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine_svc.infra.cgroups import CgroupManager, SandboxGroup, join_command
from engine_svc.infra.sandbox import Limits, SandboxSpec, build_command
from tests.k8s.apiserver import ApiServer

REPO = Path(__file__).resolve().parents[2]
PODTOOLS_IMAGE = "c2d-podtools:test"
PYTHON_IMAGE = "python:3.11-slim"
_IMAGE_NAME = re.compile(r"[a-z0-9]+([._/:@-][A-Za-z0-9_.-]+)*")


@dataclass(frozen=True)
class Image:
    """What a container of this image sees besides the host's /usr: its environment, files it
    holds (host path, path inside), host folders visible at the same path."""

    env: dict[str, str] = field(default_factory=dict)
    ro_binds: tuple[tuple[str, str], ...] = ()
    host_ro_paths: tuple[str, ...] = ()


def _python_prefixes() -> tuple[str, ...]:
    paths: list[str] = []
    for candidate in (
        sys.prefix,
        sys.base_prefix,
        os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
    ):
        if candidate.startswith("/usr") or any(
            candidate == p or candidate.startswith(p + "/") for p in paths
        ):
            continue
        paths = [p for p in paths if not p.startswith(candidate + "/")]
        paths.append(candidate)
    return tuple(paths)


def default_images() -> dict[str, Image]:
    """The podtools image (this repository's podtools on this venv's Python, as
    deploy/podtools.Dockerfile builds it) and a Python runtime image (the system's python3)."""
    return {
        PODTOOLS_IMAGE: Image(
            env={
                "PATH": f"{sys.prefix}/bin:/usr/local/bin:/usr/bin:/bin",
                "PYTHONPATH": "/opt/c2d",
                "PYTHONDONTWRITEBYTECODE": "1",
            },
            ro_binds=((str(REPO / "podtools"), "/opt/c2d/podtools"),),
            host_ro_paths=_python_prefixes(),
        ),
        PYTHON_IMAGE: Image(env={"PATH": "/usr/local/bin:/usr/bin:/bin"}),
    }


# --- quantities -----------------------------------------------------------------------------------

_SUFFIXES = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "m": 0.001,
}


def quantity(value: str | int | float) -> float:
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    if match is None or match[2] not in _SUFFIXES:
        raise ValueError(f"not a quantity: {value!r}")
    return float(match[1]) * _SUFFIXES[match[2]]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ContainerLog:
    chunks: list[tuple[float, bytes]] = field(default_factory=list)
    started: bool = False
    finished: bool = False
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def append(self, data: bytes) -> None:
        async with self.changed:
            self.chunks.append((asyncio.get_running_loop().time(), data))
            self.changed.notify_all()

    async def wait_beyond(self, count: int) -> None:
        """Until there are more than count pieces, or the log has ended."""
        async with self.changed:
            await self.changed.wait_for(lambda: len(self.chunks) > count or self.finished)

    async def finish(self) -> None:
        async with self.changed:
            self.finished = True
            self.changed.notify_all()


class PodFailedToStart(Exception):
    """The pod waits (its status says why) until it is deleted."""


@dataclass
class Node:
    name: str = "node-1"
    allocatable: dict[str, str] = field(
        default_factory=lambda: {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "100Gi", "pods": "110"}
    )
    labels: dict[str, str] = field(default_factory=lambda: {"kubernetes.io/hostname": "node-1"})
    taints: list[dict[str, str]] = field(default_factory=list)


class Kubelet:
    def __init__(
        self,
        api: ApiServer,
        root: Path,
        images: dict[str, Image] | None = None,
        node: Node | None = None,
        claim_paths: dict[tuple[str, str], Path] | None = None,
        use_cgroups: bool = True,
    ):
        self.api = api
        self.root = root
        self.images = default_images() if images is None else images
        self.node = node or Node()
        self.claim_paths = dict(claim_paths or {})
        self.use_cgroups = use_cgroups
        self.cgroups: CgroupManager | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._logs: dict[tuple[str, str, str], ContainerLog] = {}
        self._running: dict[str, dict[str, float]] = {}  # pod uid -> requests it holds
        self._loop_task: asyncio.Task[None] | None = None
        self._ips = itertools.count(10)
        # Every pod this kubelet ran: (namespace, name) -> the sandbox network it got.
        self.networks: dict[tuple[str, str], str] = {}

    async def __aenter__(self) -> Kubelet:
        self.root.mkdir(parents=True, exist_ok=True)
        self.cgroups = CgroupManager.detect() if self.use_cgroups else None
        self.api.log_source = self
        queue = self.api.subscribe()
        for pod in self.api.select("pods"):
            self._admit(pod)
        self._loop_task = asyncio.create_task(self._follow(queue))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.cgroups is not None:
            self.cgroups.close()

    async def _follow(self, queue: asyncio.Queue[Any]) -> None:
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                _, plural, event = item
                if plural != "pods":
                    continue
                pod = event["object"]
                if event["type"] == "ADDED":
                    self._admit(pod)
                elif event["type"] == "DELETED":
                    task = self._tasks.pop(pod["metadata"]["uid"], None)
                    if task is not None:
                        task.cancel()
        finally:
            self.api.unsubscribe(queue)

    def _admit(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        if uid not in self._tasks and not (pod.get("status") or {}).get("startTime"):
            self._tasks[uid] = asyncio.create_task(
                self._run_pod(pod), name=f"kubelet-{pod['metadata']['name']}"
            )

    # --- log source -------------------------------------------------------------------------------

    def log_state(self, namespace: str, pod: str, container: str) -> str | None:
        record = self._logs.get((namespace, pod, container))
        return None if record is not None and record.started else "ContainerCreating"

    async def log_chunks(
        self, namespace: str, pod: str, container: str, follow: bool, since: float | None
    ) -> AsyncIterator[bytes]:
        record = self._logs[(namespace, pod, container)]
        oldest = asyncio.get_running_loop().time() - since if since is not None else None
        index = 0
        while True:
            while index < len(record.chunks):
                moment, data = record.chunks[index]
                index += 1
                if oldest is None or moment >= oldest:
                    yield data
            if not follow or record.finished:
                return
            await record.wait_beyond(index)

    # --- scheduling -------------------------------------------------------------------------------

    @staticmethod
    def _requests(pod: dict[str, Any]) -> dict[str, float]:
        def of(containers: list[dict[str, Any]]) -> list[dict[str, float]]:
            found = []
            for container in containers:
                resources = container.get("resources") or {}
                asked = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
                found.append({k: quantity(v) for k, v in asked.items()})
            return found

        total: dict[str, float] = {}
        for asked in of(pod["spec"]["containers"]):
            for key, value in asked.items():
                total[key] = total.get(key, 0) + value
        for asked in of(pod["spec"].get("initContainers", [])):
            for key, value in asked.items():
                total[key] = max(total.get(key, 0), value)
        return total

    def _unschedulable(self, pod: dict[str, Any]) -> str | None:
        spec = pod["spec"]
        namespace = pod["metadata"]["namespace"]
        node = self.node
        for volume in spec.get("volumes", []):
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim is None:
                continue
            found = self.api.read("persistentvolumeclaims", namespace, claim)
            if found is None:
                return f'0/1 nodes are available: persistentvolumeclaim "{claim}" not found.'
            if (found.get("status") or {}).get("phase") != "Bound":
                return "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims."
        selector = spec.get("nodeSelector") or {}
        if any(node.labels.get(k) != v for k, v in selector.items()):
            return "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
        tolerations = spec.get("tolerations") or []
        for taint in node.taints:
            if taint.get("effect") not in ("NoSchedule", "NoExecute"):
                continue
            if not any(
                t.get("key") == taint["key"]
                and (t.get("operator") == "Exists" or t.get("value") == taint.get("value"))
                for t in tolerations
            ):
                return f"0/1 nodes are available: 1 node(s) had untolerated taint {{{taint['key']}}}."
        asked = self._requests(pod)
        short = []
        for resource, amount in sorted(asked.items()):
            capacity = quantity(node.allocatable.get(resource, "0"))
            used = sum(held.get(resource, 0) for held in self._running.values())
            if amount > capacity - used:
                short.append(resource)
        if short:
            return "0/1 nodes are available: " + ", ".join(f"1 Insufficient {r}" for r in short) + "."
        return None

    def _network(self, pod: dict[str, Any]) -> str:
        """ "none" when a NetworkPolicy selects the pod for egress and none allows any."""
        labels = pod["metadata"].get("labels") or {}
        selected = allowed = False
        for policy in self.api.select("networkpolicies", pod["metadata"]["namespace"]):
            spec = policy["spec"]
            wanted = (spec.get("podSelector") or {}).get("matchLabels") or {}
            if any(labels.get(k) != v for k, v in wanted.items()):
                continue
            if "Egress" in spec.get("policyTypes", []):
                selected = True
                allowed = allowed or bool(spec.get("egress"))
        return "none" if selected and not allowed else "host"

    # --- running ----------------------------------------------------------------------------------

    async def _run_pod(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        status: dict[str, Any] = dict(pod.get("status") or {})
        pod_dir = self.root / "pods" / uid
        processes: dict[str, asyncio.subprocess.Process] = {}
        groups: list[SandboxGroup] = []

        def write(spec_update: dict[str, Any] | None = None) -> None:
            self.api.update_pod_status(namespace, name, status, spec_update)

        def container_status(container: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
            return {
                "name": container["name"],
                "image": container["image"],
                "imageID": f"docker.io/library/{container['image']}@sha256:{'0' * 64}",
                "containerID": f"containerd://{uid[:8]}{container['name']}",
                "ready": "running" in state,
                "started": "running" in state,
                "restartCount": 0,
                "state": state,
                "lastState": {},
            }

        init_containers = spec.get("initContainers", [])
        containers = spec["containers"]
        try:
            reason = self._unschedulable(pod)
            if reason is not None:
                status["conditions"] = [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": reason,
                        "lastTransitionTime": _now(),
                    }
                ]
                write()
                raise PodFailedToStart(reason)
            self._running[uid] = self._requests(pod)
            status.update(
                {
                    "phase": "Pending",
                    "startTime": _now(),
                    "hostIP": "10.0.0.1",
                    "podIP": f"10.244.0.{next(self._ips) % 250 + 2}",
                    "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()}],
                    "initContainerStatuses": [
                        container_status(c, {"waiting": {"reason": "PodInitializing"}})
                        for c in init_containers
                    ],
                    "containerStatuses": [
                        container_status(c, {"waiting": {"reason": "ContainerCreating"}}) for c in containers
                    ],
                }
            )
            if not init_containers:
                status.pop("initContainerStatuses")
            write({"nodeName": self.node.name})
            deadline = spec.get("activeDeadlineSeconds")
            try:
                async with asyncio.timeout(deadline):
                    await self._start_and_run(
                        pod, status, write, container_status, pod_dir, processes, groups
                    )
            except TimeoutError:
                for process in processes.values():
                    _kill(process)
                for group in groups:
                    group.kill_all()
                status.update(
                    {
                        "phase": "Failed",
                        "reason": "DeadlineExceeded",
                        "message": "Pod was active on the node longer than the specified deadline",
                    }
                )
                for key in ("initContainerStatuses", "containerStatuses"):
                    for item in status.get(key, []):
                        if "running" in item["state"]:
                            item["state"] = {
                                "terminated": {
                                    "exitCode": 137,
                                    "reason": "Error",
                                    "startedAt": item["state"]["running"]["startedAt"],
                                    "finishedAt": _now(),
                                }
                            }
                            item["ready"] = item["started"] = False
                write()
        except PodFailedToStart:
            await asyncio.Event().wait()  # until the pod is deleted (this task cancelled)
        finally:
            for process in processes.values():
                _kill(process)
            for process in processes.values():
                with contextlib.suppress(Exception):
                    await asyncio.shield(process.wait())
            for group in groups:
                group.kill_all()
                await asyncio.to_thread(group.remove)
            self._running.pop(uid, None)
            for log_key in [k for k in self._logs if k[:2] == (namespace, name)]:
                await self._logs[log_key].finish()
            await asyncio.to_thread(shutil.rmtree, pod_dir, True)

    async def _start_and_run(
        self,
        pod: dict[str, Any],
        status: dict[str, Any],
        write: Any,
        container_status: Any,
        pod_dir: Path,
        processes: dict[str, asyncio.subprocess.Process],
        groups: list[SandboxGroup],
    ) -> None:
        spec = pod["spec"]
        init_containers = spec.get("initContainers", [])
        containers = spec["containers"]
        all_containers = [*init_containers, *containers]
        for container in all_containers:
            image = container["image"]
            if image not in self.images:
                waiting = "InvalidImageName" if not _IMAGE_NAME.fullmatch(image) else "ErrImagePull"
                for key in ("initContainerStatuses", "containerStatuses"):
                    for item in status.get(key, []):
                        if item["name"] == container["name"]:
                            item["state"] = {
                                "waiting": {"reason": waiting, "message": f'failed to pull image "{image}"'}
                            }
                write()
                if waiting == "ErrImagePull":
                    await asyncio.sleep(0.3)
                    for key in ("initContainerStatuses", "containerStatuses"):
                        for item in status.get(key, []):
                            if item["name"] == container["name"]:
                                item["state"] = {"waiting": {"reason": "ImagePullBackOff"}}
                    write()
                raise PodFailedToStart(waiting)
        volumes = await self._mount(pod, pod_dir)
        network = self._network(pod)
        self.networks[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = network

        async def run(container: dict[str, Any], key: str, index: int) -> int:
            item = status[key][index]
            started = _now()
            process_started = asyncio.Event()

            async def on_start() -> None:
                item["state"] = {"running": {"startedAt": started}}
                item["ready"] = item["started"] = True
                if key == "containerStatuses":
                    status["phase"] = "Running"
                write()
                process_started.set()

            code, reason, message = await self._run_container(
                pod, container, volumes, network, pod_dir, processes, groups, on_start
            )
            terminated: dict[str, Any] = {
                "exitCode": code,
                "reason": reason,
                "startedAt": started,
                "finishedAt": _now(),
            }
            if message:
                terminated["message"] = message
            item["state"] = {"terminated": terminated}
            item["ready"] = item["started"] = False
            return code

        for index, container in enumerate(init_containers):
            if await run(container, "initContainerStatuses", index) != 0:
                status["phase"] = "Failed"
                for item in status["containerStatuses"]:
                    item["state"] = {"waiting": {"reason": "PodInitializing"}}
                write()
                return
            write()
        codes = await asyncio.gather(
            *(run(container, "containerStatuses", index) for index, container in enumerate(containers))
        )
        status["phase"] = "Succeeded" if all(code == 0 for code in codes) else "Failed"
        write()

    async def _mount(self, pod: dict[str, Any], pod_dir: Path) -> dict[str, tuple[Path, bool]]:
        """Each volume's host folder, and whether it is read-only by nature (Secrets, ConfigMaps)."""
        namespace = pod["metadata"]["namespace"]
        found: dict[str, tuple[Path, bool]] = {}
        for volume in pod["spec"].get("volumes", []):
            name = volume["name"]
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                path = self.claim_paths.get((namespace, claim)) or self.root / "volumes" / namespace / claim
                path.mkdir(parents=True, exist_ok=True)
                found[name] = (path, False)
            elif "emptyDir" in volume:
                path = pod_dir / "volumes" / name
                path.mkdir(parents=True, exist_ok=True)
                found[name] = (path, False)
            elif "secret" in volume or "configMap" in volume:
                source = volume.get("secret") or volume.get("configMap") or {}
                plural = "secrets" if "secret" in volume else "configmaps"
                obj_name = str(source.get("secretName") or source.get("name"))
                obj = self.api.read(plural, namespace, obj_name)
                if obj is None:
                    raise PodFailedToStart(f"{plural} {obj_name!r} not found")
                data = obj.get("data") or {}
                path = pod_dir / "volumes" / name
                path.mkdir(parents=True, exist_ok=True)
                items = source.get("items") or [{"key": k, "path": k} for k in data]
                for entry in items:
                    value = data[entry["key"]]
                    content = base64.b64decode(value) if plural == "secrets" else value.encode()
                    target = path / entry["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(content)
                found[name] = (path, True)
            else:
                raise PodFailedToStart(f"volume {name!r} is of a kind this kubelet cannot mount")
        return found

    def _env(self, pod: dict[str, Any], container: dict[str, Any], image: Image) -> dict[str, str]:
        namespace = pod["metadata"]["namespace"]
        env = dict(image.env)
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
                continue
            source = item.get("valueFrom") or {}
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = self.api.read("secrets", namespace, ref["name"])
                if secret is None or ref["key"] not in (secret.get("data") or {}):
                    raise PodFailedToStart(f"secret {ref['name']!r} or its key {ref['key']!r} not found")
                env[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
            elif "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                env[item["name"]] = {
                    "metadata.name": pod["metadata"]["name"],
                    "metadata.namespace": namespace,
                }[path]
        return env

    async def _run_container(
        self,
        pod: dict[str, Any],
        container: dict[str, Any],
        volumes: dict[str, tuple[Path, bool]],
        network: str,
        pod_dir: Path,
        processes: dict[str, asyncio.subprocess.Process],
        groups: list[SandboxGroup],
        on_start: Any,
    ) -> tuple[int, str, str]:
        namespace, pod_name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        name = container["name"]
        image = self.images[container["image"]]
        record = self._logs[(namespace, pod_name, name)] = ContainerLog()
        ro_binds: list[tuple[str, str]] = list(image.ro_binds)
        rw_binds: list[tuple[str, str]] = []
        for mount in sorted(container.get("volumeMounts", []), key=lambda m: m["mountPath"].count("/")):
            path, read_only = volumes[mount["name"]]
            if mount.get("subPath"):
                path = path / mount["subPath"]
                path.mkdir(parents=True, exist_ok=True)
            target = ro_binds if read_only or mount.get("readOnly") else rw_binds
            target.append((str(path), mount["mountPath"]))
        termination = pod_dir / f"{name}.termination-log"
        termination.parent.mkdir(parents=True, exist_ok=True)
        termination.write_bytes(b"")
        rw_binds.append((str(termination), container.get("terminationMessagePath", "/dev/termination-log")))
        # The image's files (host folders such as this venv) are bound last: in a real image they
        # are never under a volume's mount path, but a checkout under /tmp puts the venv beneath the
        # pods' /tmp emptyDir, which would hide it.
        ro_binds += [(path, path) for path in image.host_ro_paths]
        limits = (container.get("resources") or {}).get("limits") or {}
        memory = int(quantity(limits["memory"])) if "memory" in limits else None
        group = None
        if self.cgroups is not None and memory is not None:
            group = self.cgroups.create(
                f"{pod['metadata']['uid']}-{name}", max_processes=512, memory_bytes=memory
            )
            groups.append(group)
        spec = SandboxSpec(
            argv=[*container.get("command", []), *container.get("args", [])],
            network=network,
            ro_binds=ro_binds,
            rw_binds=rw_binds,
            env=self._env(pod, container, image),
            chdir=container.get("workingDir") or "/",
            limits=Limits(
                memory_bytes=None if group is not None else memory,
                cpu_seconds=3600,
                file_size_bytes=1 << 40,
            ),
        )
        command = build_command(spec)
        if group is not None:
            command = join_command(group, command)
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=spec.env,
            start_new_session=True,
        )
        processes[name] = process
        record.started = True
        await on_start()
        assert process.stdout is not None
        try:
            while chunk := await process.stdout.read(65536):
                await record.append(chunk)
            code = await process.wait()
        finally:
            await record.finish()
        if code < 0:
            code = 128 - code
        oom = group is not None and group.oom_kills() > 0
        reason = "OOMKilled" if oom else ("Completed" if code == 0 else "Error")
        message = termination.read_bytes()[:4096].decode(errors="replace")
        return code, reason, message


def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
