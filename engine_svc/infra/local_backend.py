"""The local backend: each phase of a job is a separate bubblewrap sandbox on this machine.

Layout of a job's workspace (host side), all deleted when the job ends:

    <work_dir>/<job_id>/data/{inputs,transformations,ddos,outputs,logs}   seen as /data/... inside
    <work_dir>/<job_id>/c2d/job.json          what podtools configure reads (locations included)
    <work_dir>/<job_id>/c2d/out/              podtools' result file
    <work_dir>/<job_id>/c2d/algorithm-logs/   the algorithm's stdout and stderr, as captured

Results go to <results_dir>/<job_id>/{outputs,logs}/ (the local result store), or to the S3 or
IPFS result store the storage settings name (c2d_common/storage.py, docs/storage.md).
"""

from __future__ import annotations

import asyncio
import base64
import compileall
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import stat
import sys
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import structlog
from google.protobuf import json_format

from c2d.common.v1 import job_pb2
from c2d_common.env import ConfigError
from c2d_common.file_urls import FileUrlPolicy, FileUrlRefused
from c2d_common.storage import StorageRefused, StorageSettings, delete_job_results
from engine_svc.domain.model import (
    AlgorithmOutcome,
    BackendError,
    ConfigureOutcome,
    JobContext,
    OutputSink,
    PublishedFile,
    PublishOutcome,
)
from engine_svc.infra.cgroups import CgroupManager, SandboxGroup, join_command
from engine_svc.infra.http_inputs import http_options
from engine_svc.infra.local_inputs import LocalFile, LocalProvisioningFailed, provide_files, write_inline
from engine_svc.infra.sandbox import Limits, SandboxSpec, build_command, find_bwrap, user_namespace_maps
from podtools.safepath import UnsafeName, did_folder_name

log = structlog.get_logger(__name__)

PODTOOLS_DIR = Path(__file__).resolve().parents[2] / "podtools"
READ_CHUNK = 64 * 1024
# How long the end of a job waits for a remote store to remove a half-published result.
REMOTE_CLEANUP_SECONDS = 20.0
# How long a job's end waits for that removal before it is reported (the removal goes on).
REMOTE_CLEANUP_WAIT_SECONDS = 2.0
SIGXCPU = int(signal.SIGXCPU)
SIGXFSZ = int(signal.SIGXFSZ)


@dataclass(frozen=True)
class LocalBackendSettings:
    work_dir: Path
    results_dir: Path
    # file:// inputs: where they may lie (see c2d_common.file_urls); None refuses them all.
    file_policy: FileUrlPolicy | None = None
    # http(s) inputs from loopback, private or link-local addresses (see podtools/hosts.py).
    allow_private_input_hosts: bool = False
    # S3 and IPFS inputs, the result store, quotas (c2d_common/storage.py). None: read from the
    # environment (C2D_RESULT_STORE, C2D_S3_*, C2D_IPFS_*, …).
    storage: StorageSettings | None = None
    # Runtime name -> interpreter on this machine, e.g. {"python3": "/usr/bin/python3"}.
    runtimes: dict[str, str] | None = None
    podtools_python: str = sys.executable
    # Memory and process limits for podtools' own sandboxes.
    podtools_memory_bytes: int = 2 * 1024**3
    podtools_max_processes: int = 64
    # Put each algorithm sandbox in a cgroup of its own when the machine lets us (see cgroups.py).
    use_cgroups: bool = True
    # The podtools' sandboxes too. Off by default: they run our code, which rlimits hold well
    # enough, and moving a process into a cgroup costs ~10 ms on cgroup v1 (an RCU grace period
    # per write to cgroup.procs), a tenth of a trivial job's whole overhead per phase.
    podtools_cgroups: bool = False
    # Niceness of every sandbox (see sandbox.Limits.nice); C2D_SANDBOX_NICE.
    sandbox_nice: int = 10
    # The host uid algorithms run as (C2D_SANDBOX_UID): an engine running as root gives them an
    # unprivileged uid of the host, not only inside their user namespace (see
    # sandbox.SandboxSpec.host_user). None: the engine's own uid, the only choice of an
    # unprivileged engine. AUTO: 65534 (nobody) when the engine is root, else None.
    sandbox_user: int | Literal["auto"] | None = "auto"


def default_runtimes() -> dict[str, str]:
    system_python = "/usr/bin/python3"
    python = system_python if os.path.exists(system_python) else sys.executable
    return {"python3": python}


def _interpreter_paths(executable: str) -> list[str]:
    """The host folders an interpreter needs, to bind read-only at the same path."""
    paths: list[str] = []
    if executable.startswith("/usr/"):
        return paths
    real = os.path.realpath(executable)
    if executable == sys.executable:
        candidates = [sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(real))]
    else:
        candidates = [os.path.dirname(os.path.dirname(real)), os.path.dirname(os.path.dirname(executable))]
    for candidate in candidates:
        if candidate.startswith("/usr/") or candidate in ("/", "/usr"):
            continue
        if not any(candidate == p or candidate.startswith(p + "/") for p in paths):
            paths = [p for p in paths if not p.startswith(candidate + "/")]
            paths.append(candidate)
    return paths


def _site_packages(python: str) -> list[str]:
    if python != sys.executable:
        return []
    return list(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))


def precompile_podtools() -> None:
    """Writes podtools' bytecode once, so that no sandbox compiles it (they run with -B and a
    read-only view of the code). Best effort: without it, podtools still run."""
    with contextlib.suppress(OSError):
        compileall.compile_dir(str(PODTOOLS_DIR), quiet=1)


# What podtools import to reach S3 (boto3 and its dependencies).
S3_PACKAGES = ("boto3", "botocore", "s3transfer", "urllib3", "jmespath", "dateutil")


def precompile_s3_packages() -> None:
    """Writes boto3's bytecode where it is missing, when the engine may use S3: a sandbox that
    compiles boto3 and botocore from source spends about 0.7 s more CPU per phase. Best effort
    (an installer that compiled them, or a read-only environment, makes it a no-op)."""
    import importlib.util

    for name in S3_PACKAGES:
        with contextlib.suppress(Exception):
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.submodule_search_locations:
                for folder in spec.submodule_search_locations:
                    compileall.compile_dir(folder, quiet=1, workers=1)


def _read_child_pid(fd: int) -> int:
    """bwrap's --info-fd: a JSON object with the sandbox's "child-pid"."""
    data = b""
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
        try:
            return int(json.loads(data)["child-pid"])
        except ValueError:
            continue
    return int(json.loads(data)["child-pid"])


def _did_folder(did: str) -> str:
    """A dataset's folder name; ValueError (the plan's refusal) for a DID that cannot be one."""
    try:
        return did_folder_name(did)
    except UnsafeName as exc:
        raise ValueError(str(exc)) from None


class NetworkSetupFailed(BackendError):
    pass


class ProcessFailedToStart(Exception):
    pass


class LocalBackend:
    def __init__(self, settings: LocalBackendSettings):
        self.settings = settings
        self.bwrap = find_bwrap()
        user = settings.sandbox_user
        self.sandbox_user: int | None = (65534 if os.geteuid() == 0 else None) if user == "auto" else user
        if self.sandbox_user is not None and os.geteuid() != 0:
            raise ConfigError(
                "C2D_SANDBOX_UID needs an engine running as root (it writes the sandboxes' user maps); "
                "an unprivileged engine's sandboxes run as its own uid: leave C2D_SANDBOX_UID unset"
            )
        if self.sandbox_user == 0:
            raise ConfigError("C2D_SANDBOX_UID=0 would run algorithms as root: give an unprivileged uid")
        self.runtimes = settings.runtimes or default_runtimes()
        self.storage = settings.storage if settings.storage is not None else StorageSettings.from_env()
        # Jobs whose publish to a remote store may have left files there that nothing lists yet
        # (a publish under way, killed or timed out): removed unless the job keeps its results.
        self._remote_results: set[str] = set()
        # Removals of remote results still under way after their job's end.
        self._cleanups: set[asyncio.Task[None]] = set()
        # The engine owns its work folder: whatever is in it now is left from an engine that died
        # (its jobs are dispatched again), and would otherwise stay on disk for ever.
        shutil.rmtree(self.settings.work_dir, ignore_errors=True)
        self.settings.work_dir.mkdir(parents=True, exist_ok=True)
        self.settings.results_dir.mkdir(parents=True, exist_ok=True)
        precompile_podtools()
        if self.storage.result_store.kind == "s3" or self.storage.s3.input_buckets:
            precompile_s3_packages()
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self._groups: dict[str, SandboxGroup] = {}
        self._network_helpers: dict[str, asyncio.subprocess.Process] = {}
        self.slirp4netns = shutil.which("slirp4netns")
        self._killed: set[str] = set()
        # A stop tells the engine's own provisioning (a large copy) to give up.
        self._cancel_provisioning: dict[str, threading.Event] = {}
        self.cgroups = CgroupManager.detect() if settings.use_cgroups else None
        if self.cgroups is None:
            log.warning(
                "no writable cgroups: sandboxes get rlimits only (no process limit, memory as "
                "address space, no out-of-memory flag)"
            )
        else:
            log.info("sandboxes get a cgroup each", cgroup_version=self.cgroups.version)

    # --- paths ----------------------------------------------------------------------------------

    def workspace(self, job_id: str) -> Path:
        return self.settings.work_dir / job_id

    def results(self, job_id: str) -> Path:
        return self.settings.results_dir / job_id

    def create_workspace(self, job_id: str) -> None:
        root = self.workspace(job_id)
        # A job run again (after an engine crash) starts from nothing: no file of an earlier attempt.
        shutil.rmtree(root, ignore_errors=True)
        for name in ("inputs", "transformations", "ddos", "outputs", "logs"):
            (root / "data" / name).mkdir(parents=True, exist_ok=True)
        for name in ("out", "algorithm-logs"):
            (root / "c2d" / name).mkdir(parents=True, exist_ok=True)

    def _data(self, job_id: str, name: str) -> str:
        return str(self.workspace(job_id) / "data" / name)

    def _c2d(self, job_id: str, name: str) -> str:
        return str(self.workspace(job_id) / "c2d" / name)

    # --- processes ------------------------------------------------------------------------------

    def _group(
        self, job_id: str, phase: str, *, max_processes: int, memory_bytes: int
    ) -> SandboxGroup | None:
        if self.cgroups is None:
            return None
        group = self.cgroups.create(
            f"{job_id}-{phase}", max_processes=max_processes, memory_bytes=memory_bytes
        )
        self._groups[job_id] = group
        return group

    async def _release_group(self, job_id: str) -> SandboxGroup | None:
        group = self._groups.pop(job_id, None)
        if group is not None:
            group.kill_all()
            await asyncio.to_thread(group.remove)
        return group

    async def _start(
        self, job_id: str, spec: SandboxSpec, capture: bool, group: SandboxGroup | None = None
    ) -> asyncio.subprocess.Process:
        if job_id in self._killed:
            raise ProcessFailedToStart("the job was stopped")
        if spec.network == "isolated" or spec.host_user is not None:
            return await self._start_staged(job_id, spec, capture, group)
        return await self._spawn(job_id, spec, capture, group)

    async def _spawn(
        self,
        job_id: str,
        spec: SandboxSpec,
        capture: bool,
        group: SandboxGroup | None,
        pass_fds: tuple[int, ...] = (),
    ) -> asyncio.subprocess.Process:
        command = build_command(spec, self.bwrap)
        if group is not None:
            command = join_command(group, command)
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=spec.env,
            start_new_session=True,
            pass_fds=pass_fds,
        )
        self._processes[job_id] = process
        if job_id in self._killed:
            # A stop arrived while the process was being created, before it could be found.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        return process

    async def _start_staged(
        self, job_id: str, spec: SandboxSpec, capture: bool, group: SandboxGroup | None
    ) -> asyncio.subprocess.Process:
        """Starts the sandbox blocked, sets it up from outside, then lets it run: the user
        namespace's maps for a sandbox with a host user (bwrap waits on userns_block_fd), and the
        network for an "isolated" one (slirp4netns, the host's loopback out of reach; bwrap waits
        on block_fd). Fails closed: a sandbox that cannot be set up never runs its command."""
        isolated = spec.network == "isolated"
        if isolated and self.slirp4netns is None:
            raise NetworkSetupFailed(
                "this environment allows network, which needs slirp4netns on the engine's machine "
                "(apt-get install slirp4netns)"
            )
        if isolated:
            assert spec.resolv_conf is not None
            Path(spec.resolv_conf).write_text("nameserver 10.0.2.3\n")  # slirp4netns' DNS forwarder
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe() if isolated else (None, None)
        userns_r, userns_w = os.pipe() if spec.host_user is not None else (None, None)
        spec = dataclasses.replace(spec, info_fd=info_w, block_fd=block_r, userns_block_fd=userns_r)
        inherited = tuple(fd for fd in (info_w, block_r, userns_r) if fd is not None)
        try:
            process = await self._spawn(job_id, spec, capture, group, pass_fds=inherited)
        finally:
            for fd in inherited:
                os.close(fd)
        try:
            pid = await asyncio.wait_for(asyncio.to_thread(_read_child_pid, info_r), 10)
            if spec.host_user is not None:
                assert userns_w is not None
                maps = user_namespace_maps(spec.host_user)
                Path(f"/proc/{pid}/uid_map").write_text(maps)
                Path(f"/proc/{pid}/gid_map").write_text(maps)
                os.write(userns_w, b"1")
            if isolated:
                assert block_w is not None
                await self._connect_network(job_id, pid)
                os.write(block_w, b"1")
        except (OSError, TimeoutError, ValueError, NetworkSetupFailed) as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            await self._stop_network_helper(job_id)
            if isinstance(exc, NetworkSetupFailed):
                raise
            if not isolated:
                raise ProcessFailedToStart(f"the sandbox could not be set up: {exc}") from exc
            raise NetworkSetupFailed(f"the sandbox's network could not be set up: {exc}") from exc
        finally:
            for end in [info_r, *(fd for fd in (block_w, userns_w) if fd is not None)]:
                os.close(end)
        return process

    async def _connect_network(self, job_id: str, pid: int) -> None:
        assert self.slirp4netns is not None
        ready_r, ready_w = os.pipe()
        try:
            helper = await asyncio.create_subprocess_exec(
                self.slirp4netns,
                "--configure",
                "--mtu=65520",
                "--disable-host-loopback",
                f"--ready-fd={ready_w}",
                "--netns-type=path",
                f"/proc/{pid}/ns/net",
                "tap0",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                pass_fds=(ready_w,),
                start_new_session=True,
            )
        finally:
            os.close(ready_w)
        self._network_helpers[job_id] = helper
        try:
            ready = await asyncio.wait_for(asyncio.to_thread(os.read, ready_r, 1), 10)
        finally:
            os.close(ready_r)
        if ready != b"1":
            raise NetworkSetupFailed("slirp4netns could not connect the sandbox's network")

    async def _stop_network_helper(self, job_id: str) -> None:
        helper = self._network_helpers.pop(job_id, None)
        if helper is not None and helper.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                helper.kill()
            await helper.wait()

    async def kill_unseen(self, job_id: str) -> None:
        """Nothing to do: a sandbox dies with the engine that started it (--die-with-parent)."""

    async def kill(self, job_id: str) -> None:
        self._killed.add(job_id)
        cancelled = self._cancel_provisioning.get(job_id)
        if cancelled is not None:
            cancelled.set()
        process = self._processes.get(job_id)
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        group = self._groups.get(job_id)
        if group is not None:
            group.kill_all()  # whatever left the process group: the cgroup still holds it
        await self._stop_network_helper(job_id)
        if process is not None:
            with contextlib.suppress(Exception):
                await process.wait()

    async def _run_podtool(
        self, job_id: str, phase: str, spec: SandboxSpec, timeout: float
    ) -> tuple[int | None, dict[str, Any] | None, str]:
        """Runs a podtool; answers (exit code or None on timeout, its result file, its stderr tail)."""
        group = (
            self._group(
                job_id,
                phase,
                max_processes=self.settings.podtools_max_processes,
                memory_bytes=self.settings.podtools_memory_bytes,
            )
            if self.settings.podtools_cgroups
            else None
        )
        try:
            return await self._run_podtool_in(job_id, spec, timeout, group)
        finally:
            await self._release_group(job_id)

    async def _run_podtool_in(
        self, job_id: str, spec: SandboxSpec, timeout: float, group: SandboxGroup | None
    ) -> tuple[int | None, dict[str, Any] | None, str]:
        process = await self._start(job_id, spec, capture=False, group=group)
        assert process.stderr is not None
        try:
            stderr = await asyncio.wait_for(process.stderr.read(), timeout)
            code: int | None = await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            return None, None, ""
        finally:
            await self._reap(job_id, process)
        result_path = Path(self._c2d(job_id, "out")) / "result.json"
        result: dict[str, Any] | None = None
        if result_path.exists():
            try:
                result = json.loads(result_path.read_text())
            except (OSError, ValueError):
                result = None
            result_path.unlink(missing_ok=True)
        return code, result, stderr.decode(errors="replace")[-2000:]

    def podtools_sandbox(
        self, argv: list[str], network: str, storage_env: dict[str, str] | None = None
    ) -> SandboxSpec:
        """storage_env: the S3/IPFS settings (credentials included), only for a podtool that uses them."""
        python = self.settings.podtools_python
        return SandboxSpec(
            # -S: no site processing (the venv's .pth files cost ~15 ms a start); the packages
            # podtools may use are on PYTHONPATH instead.
            argv=[python, "-S", "-B", *argv],
            network=network,
            host_ro_paths=_interpreter_paths(python),
            ro_binds=[(str(PODTOOLS_DIR), "/opt/c2d/podtools")],
            env={
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "HOME": "/tmp",
                "LANG": "C.UTF-8",
                "PYTHONPATH": os.pathsep.join(["/opt/c2d", *_site_packages(python)]),
                "PYTHONDONTWRITEBYTECODE": "1",
                **(storage_env or {}),
            },
            limits=Limits(
                memory_bytes=None
                if self.cgroups and self.settings.podtools_cgroups
                else self.settings.podtools_memory_bytes,
                cpu_seconds=3600,
                file_size_bytes=1 << 40,
                nice=self.settings.sandbox_nice,
            ),
        )

    # --- phases ---------------------------------------------------------------------------------

    async def configure(self, job: JobContext, timeout: float) -> ConfigureOutcome:
        job_id = job.job_id
        root = self.workspace(job_id)
        self.create_workspace(job_id)
        try:
            plan, local_files, needs_network, needs_storage = self._configure_plan(job)
        except ValueError as exc:
            failed_input = "algorithm" if str(exc).startswith("algorithm") else "data"
            return ConfigureOutcome(False, failed_input, str(exc))
        limit = int(plan["max_input_bytes"]) or None
        cancelled = threading.Event()
        self._cancel_provisioning[job_id] = cancelled
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            copied = await asyncio.wait_for(
                asyncio.to_thread(self._provide_locally, job, root / "data", local_files, limit, cancelled),
                timeout,
            )
        except LocalProvisioningFailed as exc:
            return ConfigureOutcome(False, exc.failed_input, exc.reason)
        except TimeoutError:
            return ConfigureOutcome(False, "data", f"providing the inputs took longer than {timeout:.0f} s")
        finally:
            cancelled.set()  # a thread still copying (a timeout, a stop) gives up
            self._cancel_provisioning.pop(job_id, None)
        remote = [f for d in plan["datasets"] for f in d["files"] if not f.get("provided")] + [
            f for f in plan["algorithm"]["files"] if not f.get("provided")
        ]
        if not remote:
            if not (root / "data" / "transformations" / "algorithm").exists():
                return ConfigureOutcome(False, "algorithm", "the algorithm has no code")
            return ConfigureOutcome(True)
        if limit is not None:
            plan["max_input_bytes"] = max(1, limit - copied)
        (root / "c2d" / "job.json").write_text(json.dumps(plan))
        spec = self.podtools_sandbox(
            ["-m", "podtools.configure", "/c2d/job.json", "/c2d/out/result.json"],
            # Inputs may live on the publisher's own network, loopback included: podtools are ours.
            "host" if needs_network else "none",
            self.storage.podtools_env("configure", self.storage.reads_result_store(job.input_urls))
            if needs_storage
            else None,
        )
        spec.rw_binds += [
            (self._data(job_id, "inputs"), "/data/inputs"),
            (self._data(job_id, "transformations"), "/data/transformations"),
            (self._data(job_id, "ddos"), "/data/ddos"),
            (self._c2d(job_id, "out"), "/c2d/out"),
        ]
        spec.ro_binds.append((self._c2d(job_id, "job.json"), "/c2d/job.json"))
        remaining = max(1.0, deadline - asyncio.get_running_loop().time())
        try:
            code, result, stderr = await self._run_podtool(job_id, "configure", spec, remaining)
        except ProcessFailedToStart as exc:
            return ConfigureOutcome(False, "data", str(exc))
        if code is None:
            return ConfigureOutcome(False, "data", f"fetching the inputs took longer than {timeout:.0f} s")
        if code == 0 and result and result.get("ok"):
            return ConfigureOutcome(True)
        if result:
            return ConfigureOutcome(
                False, str(result.get("failed_input", "data")), str(result.get("reason", ""))
            )
        log.warning("configure sandbox failed", exit_code=code, stderr=stderr)
        return ConfigureOutcome(False, "data", f"the configuration sandbox failed (exit code {code})")

    @staticmethod
    def _provide_locally(
        job: JobContext,
        data_root: Path,
        files: list[LocalFile],
        limit: int | None,
        cancelled: threading.Event,
    ) -> int:
        """The engine's own part of the configuration (see local_inputs.py); answers the bytes copied."""
        spec = job.spec
        write_inline(
            data_root,
            [(_did_folder(d.did), json_format.MessageToDict(d.ddo)) for d in spec.datasets],
            json_format.MessageToDict(spec.algorithm_parameters),
            spec.algorithm.raw_code,
        )
        return provide_files(data_root, files, limit, cancelled)

    def _configure_plan(self, job: JobContext) -> tuple[dict[str, Any], list[LocalFile], bool, bool]:
        """What podtools configure fetches (see podtools/configure.py), the file:// inputs the
        engine provides itself (they are "provided" in the plan), whether podtools need the
        network, and whether the S3/IPFS settings."""
        local: list[LocalFile] = []
        network = False
        storage = False

        def locate(
            location: job_pb2.FileLocation, what: str, folder: tuple[str, ...], name: str
        ) -> dict[str, Any]:
            # Errors name the asset and the file's index, never its location: status texts and
            # logs reach the consumer, and a dataset's location is the publisher's secret.
            nonlocal network, storage
            parsed = urlparse(location.url)
            url = location.url
            entry: dict[str, Any] = {}
            if parsed.scheme == "file":
                policy = self.settings.file_policy or FileUrlPolicy(roots=())
                try:
                    path = str(policy.check(location.url))
                except FileUrlRefused as exc:
                    raise ValueError(f"{what}: {exc}") from None
                failed_input = "algorithm" if folder == ("transformations",) else "data"
                local.append(
                    LocalFile(path, folder, name, location.sha256, location.size, failed_input, what)
                )
                return {"provided": True}
            if parsed.scheme in ("http", "https"):
                network = True
                entry.update(http_options(location, what))
            elif parsed.scheme in ("s3", "ipfs"):
                try:
                    if parsed.scheme == "s3":
                        self.storage.check_s3_input(url)
                    else:
                        self.storage.check_ipfs_input(url)
                except StorageRefused as exc:
                    raise ValueError(f"{what}: {exc}") from None
                network = storage = True
            else:
                raise ValueError(f"{what} has an unsupported URL scheme {parsed.scheme[:20]!r}")
            return {"url": url, "sha256": location.sha256, "size": location.size, **entry}

        datasets = []
        for dataset in job.spec.datasets:
            folder = ("inputs", _did_folder(dataset.did))
            datasets.append(
                {
                    "did": dataset.did,
                    "files": [
                        locate(f, f"dataset {dataset.did} file {index}", folder, str(index))
                        for index, f in enumerate(dataset.files)
                    ],
                }
            )
        algorithm = job.spec.algorithm
        # Ocean's names: the algorithm, then 1..N for its further files (a raw code is "algorithm").
        names = ["algorithm", *[str(i) for i in range(1, len(algorithm.files) + 1)]]
        if algorithm.raw_code:
            names.pop(0)
        plan = {
            "job_id": job.job_id,
            # The engine writes the DDOs, the parameters and a raw algorithm itself.
            "inline": False,
            "datasets": datasets,
            "algorithm": {
                "did": algorithm.did,
                "files": [
                    locate(f, f"algorithm file {index}", ("transformations",), name)
                    for index, (f, name) in enumerate(zip(algorithm.files, names, strict=False))
                ],
                "raw_code": base64.b64encode(algorithm.raw_code).decode(),
            },
            "allow_private_hosts": self.settings.allow_private_input_hosts,
            "stall_seconds": self.storage.input_stall_seconds,
            "parallel_fetches": self.storage.input_parallel_fetches,
            "max_input_bytes": self.storage.input_limit(job.environment.disk_bytes),
        }
        return plan, local, network, storage

    def algorithm_sandbox(self, job: JobContext) -> SandboxSpec | None:
        """The algorithm phase's sandbox (None when this engine lacks the algorithm's runtime)."""
        job_id = job.job_id
        env = job.environment
        algorithm = job.spec.algorithm
        runtime = algorithm.runtime or "python3"
        interpreter = self.runtimes.get(runtime)
        if interpreter is None:
            return None
        entrypoint = list(algorithm.entrypoint) or [runtime, "$ALGO"]
        argv = [a.replace("$ALGO", "/data/transformations/algorithm") for a in entrypoint]
        if argv[0] == runtime:
            argv[0] = interpreter
        return SandboxSpec(
            argv=argv,
            network="isolated" if env.network_allowed else "none",
            resolv_conf=str(self.workspace(job_id) / "c2d" / "resolv.conf") if env.network_allowed else None,
            host_ro_paths=_interpreter_paths(interpreter),
            rw_binds=[
                (self._data(job_id, "outputs"), "/data/outputs"),
                (self._data(job_id, "logs"), "/data/logs"),
            ],
            ro_binds=[
                (self._data(job_id, "inputs"), "/data/inputs"),
                (self._data(job_id, "transformations"), "/data/transformations"),
                (self._data(job_id, "ddos"), "/data/ddos"),
            ],
            env={
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "HOME": "/tmp",
                "LANG": "C.UTF-8",
                "PYTHONUNBUFFERED": "1",
                "DIDS": json.dumps([d.did for d in job.spec.datasets]),
                "TRANSFORMATION_DID": algorithm.did,
                "ALGO": "/data/transformations/algorithm",
            },
            chdir="/data",
            tmp_bytes=env.scratch_bytes,
            host_user=self.sandbox_user,
            limits=Limits(
                memory_bytes=None if self.cgroups else env.memory_bytes,
                cpu_seconds=max(1, int(env.max_duration_seconds * max(env.cpus, 1))),
                file_size_bytes=env.disk_bytes,
                nice=self.settings.sandbox_nice,
            ),
        )

    async def run_algorithm(self, job: JobContext, on_output: OutputSink) -> AlgorithmOutcome:
        job_id = job.job_id
        env = job.environment
        spec = self.algorithm_sandbox(job)
        if spec is None:
            runtime = job.spec.algorithm.runtime or "python3"
            await on_output(
                job_pb2.LOG_STREAM_SYSTEM, f"[c2d] this engine has no runtime {runtime!r}\n".encode()
            )
            return AlgorithmOutcome(exit_code=127)
        group = self._group(
            job_id, "algorithm", max_processes=env.max_processes, memory_bytes=env.memory_bytes
        )
        writable = [Path(self._data(job_id, "outputs")), Path(self._data(job_id, "logs"))]
        if self.sandbox_user is not None:
            for folder in writable:
                os.chown(folder, self.sandbox_user, self.sandbox_user)
            for name in ("inputs", "transformations", "ddos"):
                await asyncio.to_thread(_open_up, Path(self._data(job_id, name)))
        try:
            return await self._run_algorithm_in(job, spec, group, on_output)
        finally:
            await self._stop_network_helper(job_id)
            await self._release_group(job_id)
            if self.sandbox_user is not None:
                # Every process of the sandbox is gone (its group and PID namespace with it): what
                # it wrote becomes the engine's again, for publishing as before.
                for folder in writable:
                    await asyncio.to_thread(_take_back, folder)

    async def _run_algorithm_in(
        self, job: JobContext, spec: SandboxSpec, group: SandboxGroup | None, on_output: OutputSink
    ) -> AlgorithmOutcome:
        job_id = job.job_id
        env = job.environment
        try:
            process = await self._start(job_id, spec, capture=True, group=group)
        except ProcessFailedToStart:
            return AlgorithmOutcome(exit_code=137)
        logs = Path(self._c2d(job_id, "algorithm-logs"))
        assert process.stdout is not None and process.stderr is not None
        # The captured output counts against the environment's disk like the outputs do.
        budget = _DiskBudget(env.disk_bytes)
        pumps = [
            asyncio.create_task(
                self._pump(process.stdout, logs / "stdout.log", job_pb2.LOG_STREAM_STDOUT, on_output, budget)
            ),
            asyncio.create_task(
                self._pump(process.stderr, logs / "stderr.log", job_pb2.LOG_STREAM_STDERR, on_output, budget)
            ),
        ]
        timed_out = False
        outputs, log_folder = Path(self._data(job_id, "outputs")), Path(self._data(job_id, "logs"))
        watchdog = asyncio.create_task(
            _watch_disk_use(process, (outputs, log_folder), budget, env.disk_bytes), name=f"disk-{job_id}"
        )
        try:
            await asyncio.wait_for(process.wait(), env.max_duration_seconds)
        except TimeoutError:
            timed_out = True
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            await self._reap(job_id, process)
            if not all(p.done() for p in pumps) and asyncio.current_task().cancelling():  # type: ignore[union-attr]
                for pump in pumps:
                    pump.cancel()
        await asyncio.gather(*pumps)
        code = process.returncode if process.returncode is not None else -1
        if code < 0:  # killed by a signal before bwrap could report it
            code = 128 - code
        outputs_size = _tree_size(outputs) + _tree_size(log_folder) + budget.used
        for line in _unpublishable(outputs, log_folder):
            await on_output(job_pb2.LOG_STREAM_SYSTEM, f"[c2d] {line}\n".encode())
        return AlgorithmOutcome(
            exit_code=code,
            out_of_memory=group is not None and group.oom_kills() > 0,
            timed_out=timed_out or code == 128 + SIGXCPU,
            disk_quota_exceeded=code == 128 + SIGXFSZ
            or budget.exceeded
            or outputs_size > env.disk_bytes
            or (watchdog.done() and not watchdog.cancelled() and watchdog.result()),
        )

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, path: Path, stream: int, on_output: OutputSink, budget: _DiskBudget
    ) -> None:
        """Copies a pipe to its log file and the live log. Past the disk budget it keeps draining
        the pipe (the algorithm must not block on it) but keeps nothing more."""
        with path.open("wb") as sink:
            while True:
                chunk = await reader.read(READ_CHUNK)
                if not chunk:
                    return
                kept = budget.take(len(chunk))
                if kept:
                    sink.write(chunk[:kept])
                    sink.flush()
                    await on_output(stream, chunk[:kept])

    async def _reap(self, job_id: str, process: asyncio.subprocess.Process) -> None:
        """Kills the sandbox if it still runs (a timeout, or this task being cancelled), waits for
        it, and only then forgets it, so that kill() can always find a running sandbox."""
        try:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await asyncio.shield(process.wait())
        finally:
            self._processes.pop(job_id, None)

    async def publish(self, job: JobContext, timeout: float, include_outputs: bool = True) -> PublishOutcome:
        job_id = job.job_id
        store = self.storage.result_store
        target = self.results(job_id)
        if target.exists():  # a previous, interrupted run of the same job
            shutil.rmtree(target)
        argv = ["-m", "podtools.publish", "/c2d/out/result.json", "--store", store.publish_argument(job_id)]
        if self.storage.result_quota_bytes:
            argv += ["--quota", str(self.storage.result_quota_bytes)]
        if not include_outputs:
            argv.append("--logs-only")
        if store.remote:
            # The publish sandbox reaches the store (and only then gets its credentials).
            spec = self.podtools_sandbox(
                argv, network="host", storage_env=self.storage.podtools_env("publish")
            )
            self._remote_results.add(job_id)
        else:
            target.mkdir(parents=True)
            spec = self.podtools_sandbox(argv, network="none")
            spec.rw_binds.append((str(target), "/results"))
        spec.rw_binds.append((self._c2d(job_id, "out"), "/c2d/out"))
        spec.ro_binds += [
            (self._data(job_id, "outputs"), "/data/outputs"),
            (self._data(job_id, "logs"), "/data/logs"),
            (self._c2d(job_id, "algorithm-logs"), "/c2d/algorithm-logs"),
        ]
        try:
            code, result, stderr = await self._run_podtool(job_id, "publish", spec, timeout)
        except ProcessFailedToStart as exc:
            return PublishOutcome(False, str(exc))
        if code is None:
            return PublishOutcome(False, f"publishing took longer than {timeout:.0f} s")
        if code != 0 or not result or not result.get("ok"):
            log.warning("publish sandbox failed", exit_code=code, stderr=stderr)
            if result is not None:
                self._remote_results.discard(job_id)  # podtools removed what they had stored
            reason = (result or {}).get("reason") or f"the publishing sandbox failed (exit code {code})"
            return PublishOutcome(False, str(reason))
        files = []
        for item in result.get("files", []):
            if store.remote:
                location = str(item.get("location", ""))
                if not store.holds_job_result(job_id, location):
                    return PublishOutcome(False, "publish reported a location outside the job's result store")
            else:
                path = target / item["path"]
                if not path.resolve().is_relative_to(target.resolve()):
                    return PublishOutcome(
                        False, f"publish reported a path outside the store: {item['path']!r}"
                    )
                location = path.as_uri()
            files.append(
                PublishedFile(
                    name=item["name"],
                    kind=job_pb2.RESULT_KIND_LOG if item["kind"] == "log" else job_pb2.RESULT_KIND_OUTPUT,
                    size=int(item["size"]),
                    sha256=item["sha256"],
                    location=location,
                )
            )
        return PublishOutcome(True, results=files)

    def close(self) -> None:
        if self.cgroups is not None:
            self.cgroups.close()

    async def delete_job_files(self, job_id: str, *, keep_results: bool) -> None:
        await asyncio.to_thread(shutil.rmtree, self.workspace(job_id), True)
        if not keep_results:
            await asyncio.to_thread(shutil.rmtree, self.results(job_id), True)
            if job_id in self._remote_results:
                await self._delete_remote_results(job_id)
        self._remote_results.discard(job_id)
        self._killed.discard(job_id)

    async def _delete_remote_results(self, job_id: str) -> None:
        """Removes a job's files from a remote store (a publish killed, timed out, or followed by
        a stop): nothing of a result that is not listed may stay. The job's end waits for it
        REMOTE_CLEANUP_WAIT_SECONDS at most: a store that stalls (the very reason a publish timed
        out) must not hold the job past its limit. The removal goes on meanwhile, for
        REMOTE_CLEANUP_SECONDS in all; if the store never answers, the files stay and the
        engine's log says so."""
        cleanup = asyncio.create_task(self._remove_remote_results(job_id), name=f"cleanup-{job_id}")
        self._cleanups.add(cleanup)
        cleanup.add_done_callback(self._cleanups.discard)
        done, _ = await asyncio.wait({cleanup}, timeout=REMOTE_CLEANUP_WAIT_SECONDS)
        if not done:
            log.info("removing a job's files from the result store goes on after its end", job_id=job_id)

    async def _remove_remote_results(self, job_id: str) -> None:
        try:
            await asyncio.wait_for(
                asyncio.to_thread(delete_job_results, self.storage, job_id), REMOTE_CLEANUP_SECONDS
            )
        except Exception as exc:
            log.warning("could not remove a job's files from the result store", error=repr(exc))


class _DiskBudget:
    def __init__(self, total: int):
        self.total = total
        self.used = 0
        self.exceeded = False

    def take(self, size: int) -> int:
        """How much of size fits; the rest is over the quota."""
        kept = max(0, min(size, self.total - self.used))
        self.used += kept
        if kept < size:
            self.exceeded = True
        return kept


# How often the disk a running algorithm uses is measured at the most: every DISK_POLL_SECONDS, or
# less often where measuring takes long (many files), so that it costs at most a tenth of a CPU.
DISK_POLL_SECONDS = 0.05


async def _watch_disk_use(
    process: asyncio.subprocess.Process, folders: tuple[Path, ...], budget: _DiskBudget, limit: int
) -> bool:
    """Kills the sandbox as soon as its outputs, logs and captured output together are over the
    environment's disk; answers whether it did. RLIMIT_FSIZE holds each file to the limit, but not
    many files that together exceed it: without this, they would fill the host's disk until the
    algorithm ended. What can be written between two measurements is the overshoot (at a
    few GB/s, 100-200 MB), never the whole disk."""
    loop = asyncio.get_running_loop()
    while process.returncode is None:
        began = loop.time()
        used = await asyncio.to_thread(lambda: sum(_tree_size(folder) for folder in folders)) + budget.used
        if used > limit:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            return True
        await asyncio.sleep(max(DISK_POLL_SECONDS, 10 * (loop.time() - began)))
    return False


def _open_up(root: Path) -> None:
    """What the algorithm must read, readable by the sandbox user whatever the engine's umask:
    folders 0755, files the engine made 0644. A file linked from a dataset's own location is
    never changed (only world-readable ones are linked; others are copied)."""
    os.chmod(root, 0o755)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755, follow_symlinks=False)
        for name in filenames:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode) and not info.st_mode & 0o004 and info.st_nlink == 1:
                os.chmod(path, 0o644)


def _take_back(root: Path) -> None:
    """The engine's ownership of a tree the sandbox user wrote, links included, never followed."""
    uid, gid = os.getuid(), os.getgid()
    with contextlib.suppress(OSError):
        os.chown(root, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            with contextlib.suppress(OSError):
                os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _unpublishable(outputs: Path, logs: Path, limit: int = 20) -> list[str]:
    """What podtools publish will leave out, and why, for the job's log: symbolic links (never
    followed, wherever they point) and anything that is not a regular file."""
    lines: list[str] = []
    count = 0
    for label, root in (("outputs", outputs), ("logs", logs)):
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            for name in sorted(dirnames + filenames):
                path = Path(dirpath) / name
                try:
                    mode = path.lstat().st_mode
                except OSError:
                    continue
                if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
                    continue
                count += 1
                if count > limit:
                    continue
                shown = f"{label}/{path.relative_to(root)}".encode("utf-8", "backslashreplace").decode()
                if stat.S_ISLNK(mode):
                    # Where it points as the algorithm saw it (its folders are /data/<label>).
                    inside = Path("/data", label)
                    seen_from = inside / path.parent.relative_to(root)
                    target = os.path.normpath(os.path.join(seen_from, os.readlink(path)))
                    where = "inside" if Path(target).is_relative_to(inside) else "outside"
                    lines.append(f"{shown} is a symbolic link (to a path {where} {label}): not published")
                else:
                    lines.append(f"{shown} is not a regular file: not published")
    if count > limit:
        lines.append(f"… and {count - limit} more files that are not published")
    return lines
