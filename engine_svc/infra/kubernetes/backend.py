"""The Kubernetes backend: each phase of a job is a pod in the jobs' namespace.

configure, run_algorithm and publish each create their phase's pod (or find it, when a restarted
engine carries a job on), wait on the pod watcher for it to end, and read its outcome from the
pod's status and log: podtools print their result file as the last line of their log, the
algorithm's wrapper leaves the space it used in its termination message. The algorithm's output
streams live from the pod log API. kill() deletes the job's pods; delete_job_files() everything
the job created.

Restarts: every object carries the engine's id and the job's id as labels. An engine that starts
finds the jobs it left (its anchors in the namespace) and gives the operator adopt_grace_seconds
to dispatch each again: RunJob then walks the same phases, each of which finds its pod and picks
up where it was (a finished pod is read, a running one waited for). A job nobody claims in that
time is deleted, as is any job whose clean-up failed, by a sweep that runs while the engine does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp
import structlog
from kubernetes.aio import client, config
from kubernetes.aio.client.exceptions import ApiException

from c2d.common.v1 import job_pb2
from c2d_common.env import ConfigError
from c2d_common.storage import StorageSettings, delete_job_results
from engine_svc.domain.model import (
    AlgorithmOutcome,
    BackendError,
    ConfigureOutcome,
    JobContext,
    OutputSink,
    PublishedFile,
    PublishOutcome,
)
from engine_svc.infra.kubernetes.plan import MAX_PLAN_BYTES, PlanRefused, configure_plan
from engine_svc.infra.kubernetes.pods import FAILED, PodWatcher, has_started, is_over, phase
from engine_svc.infra.kubernetes.settings import KubernetesSettings
from engine_svc.infra.kubernetes.specs import (
    ALGORITHM,
    CONFIGURE,
    LABEL_JOB,
    PUBLISH,
    JobManifests,
    Manifest,
    Owner,
    anchor_name,
    job_selector,
    object_name,
    parse_result_line,
    parse_usage,
)

log = structlog.get_logger(__name__)

Pod = client.V1Pod

# Waiting reasons that no amount of waiting cures.
_HOPELESS_WAITING = frozenset({"InvalidImageName", "ErrImageNeverPull"})
# After its deadline a pod gets this long to be ended by the cluster before the engine ends it.
DEADLINE_GRACE_SECONDS = 30.0
# How long the live log may still flow once the algorithm's pod has ended.
LOG_DRAIN_SECONDS = 5.0
# How long the end of a job waits for a remote store to remove a half-published result.
REMOTE_CLEANUP_SECONDS = 20.0
_URL = re.compile(r"\S+://\S*")
# The API server is away (network, restart): phases fail with a BackendError, clean-ups are retried.
_UNREACHABLE = (aiohttp.ClientError, OSError, TimeoutError)


@dataclass(frozen=True)
class PodEnd:
    """How a phase's pod ended."""

    pod: Pod | None
    killed: bool = False
    # Ran past its deadline (the pod's activeDeadlineSeconds, or the engine's own guard).
    timed_out: bool = False
    # Why the pod never ran (unschedulable, image not found, …); empty when it ran.
    never_started: str = ""

    def terminated(self, container: str, init: bool = False) -> client.V1ContainerStateTerminated | None:
        status = self.pod.status if self.pod is not None else None
        if status is None:
            return None
        for item in (status.init_container_statuses if init else status.container_statuses) or []:
            if item.name == container and item.state is not None and item.state.terminated is not None:
                return item.state.terminated
        return None

    def exit_code(self, container: str) -> int | None:
        terminated = self.terminated(container)
        return terminated.exit_code if terminated is not None else None

    @property
    def reason(self) -> str:
        status = self.pod.status if self.pod is not None else None
        return (status.reason if status is not None else None) or ""

    @property
    def message(self) -> str:
        status = self.pod.status if self.pod is not None else None
        return (status.message if status is not None else None) or ""


def _safe_text(text: str, limit: int = 240) -> str:
    """Cluster messages for a job's owner: no URLs, one line, bounded."""
    text = _URL.sub("<location>", " ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def why_not_started(pod: Pod | None) -> str:
    """A reason fit for the job's owner: the scheduler's verdict, or the container's waiting reason
    (only its name: image pull messages hold registry URLs)."""
    if pod is None or pod.status is None:
        return "the cluster never reported it"
    status = pod.status
    for condition in status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False":
            detail = f": {_safe_text(condition.message)}" if condition.message else ""
            return f"it could not be scheduled ({condition.reason or 'Unschedulable'}){detail}"
    for container in [*(status.init_container_statuses or []), *(status.container_statuses or [])]:
        if container.state is not None and container.state.waiting is not None:
            return f"its container is waiting ({container.state.waiting.reason or 'unknown reason'})"
    return "it stayed pending"


def _hopeless(pod: Pod | None) -> bool:
    status = pod.status if pod is not None else None
    if status is None:
        return False
    return any(
        container.state is not None
        and container.state.waiting is not None
        and container.state.waiting.reason in _HOPELESS_WAITING
        for container in [*(status.init_container_statuses or []), *(status.container_statuses or [])]
    )


async def connect(settings: KubernetesSettings) -> client.ApiClient:
    """An API client: in-cluster when the engine runs in a pod (and no kubeconfig is named),
    else the kubeconfig (C2D_K8S_KUBECONFIG, $KUBECONFIG, ~/.kube/config)."""
    configuration = client.Configuration()
    if not settings.kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)
    else:
        await config.load_kube_config(
            config_file=settings.kubeconfig or None,
            context=settings.context or None,
            client_configuration=configuration,
        )
    return client.ApiClient(configuration)


class KubernetesBackend:
    def __init__(
        self,
        settings: KubernetesSettings,
        *,
        results_dir: Path,
        allow_private_input_hosts: bool = False,
        storage: StorageSettings | None = None,
        environ: Mapping[str, str] | None = None,
        connect_api: Callable[[KubernetesSettings], Awaitable[client.ApiClient]] = connect,
    ):
        settings.check()
        self.settings = settings
        self.results_dir = results_dir
        self.allow_private_input_hosts = allow_private_input_hosts
        # Inputs from S3 and IPFS, the result store, quotas (c2d_common/storage.py); by default
        # the local result store, which on a cluster is the shared volume of results_claim.
        self.storage = storage or StorageSettings()
        self.store = self.storage.result_store
        if not self.store.remote and not settings.results_claim:
            raise ConfigError(
                "the local result store needs C2D_K8S_RESULTS_CLAIM (a ReadWriteMany claim in the "
                "jobs' namespace), or set C2D_RESULT_STORE to an S3 or IPFS store"
            )
        environ = os.environ if environ is None else environ
        missing = [n for n in (*settings.configure_env, *settings.publish_env) if n not in environ]
        if missing:
            log.warning("podtools variables not set in the engine's environment", missing=missing)
        # What podtools need in their pods, each pod's in a Secret of the job's own: the storage
        # settings' variables (credentials included) where the pod uses the storage, and the
        # engine variables the settings name.
        self.configure_env = {n: environ[n] for n in settings.configure_env if n in environ}
        self.publish_env = {n: environ[n] for n in settings.publish_env if n in environ}
        if self.store.remote:
            # The result store's key only: the datasets' key never reaches a publishing pod.
            self.publish_env = {**self.storage.podtools_env("publish"), **self.publish_env}
        # Never set: a phase asked for while the engine shuts down waits for its cancellation.
        self._never = asyncio.Event()
        self._connect_api = connect_api
        self._api: client.ApiClient | None = None
        self._core: client.CoreV1Api | None = None
        self._networking: client.NetworkingV1Api | None = None
        self.watcher: PodWatcher | None = None
        self._start_lock = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None
        self._started_at = time.monotonic()
        self._owners: dict[str, Owner] = {}
        # Jobs a phase has been asked for since this engine started, until their objects go.
        self._active: set[str] = set()
        self._killed: set[str] = set()
        self._deleting: dict[str, asyncio.Task[None]] = {}
        # Jobs that ended with their results published whose clean-up has not succeeded yet: the
        # sweep that retries it leaves their results alone.
        self._results_kept: set[str] = set()
        self._detached = False

    # --- life cycle -------------------------------------------------------------------------------

    @property
    def core(self) -> client.CoreV1Api:
        assert self._core is not None, "start() first"
        return self._core

    @property
    def networking(self) -> client.NetworkingV1Api:
        assert self._networking is not None, "start() first"
        return self._networking

    async def start(self, wait_for_sync: bool = True) -> None:
        """Connects, starts watching this engine's pods, and begins sweeping jobs nobody claims.
        Idempotent; every phase calls it, and waits for the first list of pods so that a job left
        by an earlier engine is found as it is."""
        async with self._start_lock:
            if self._api is not None:
                return
            api = await self._connect_api(self.settings)
            self._core = client.CoreV1Api(api)
            self._networking = client.NetworkingV1Api(api)
            self._api = api
            self._started_at = time.monotonic()
            self.watcher = PodWatcher(
                self.core,
                self.settings.namespace,
                job_selector(self.settings.engine_id),
                self.settings.watch_timeout_seconds,
            )
            self.watcher.start()
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="c2d-k8s-sweeper")
            log.info(
                "kubernetes backend started",
                namespace=self.settings.namespace,
                engine_id=self.settings.engine_id,
            )
        if not wait_for_sync:
            return
        try:
            await asyncio.wait_for(self.watcher.synced.wait(), self.settings.start_timeout_seconds)
        except TimeoutError:
            raise BackendError("the cluster's API server did not answer; the job cannot run") from None

    def detach(self) -> None:
        """The engine is shutting down and its jobs stay in the cluster for the next engine to
        carry on: from now on kill() and delete_job_files() leave them alone."""
        if self.settings.keep_jobs_on_shutdown:
            self._detached = True

    async def close(self) -> None:
        for task in (self._sweeper, *self._deleting.values()):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.watcher is not None:
            await self.watcher.stop()
        if self._api is not None:
            await self._api.close()
            self._api = None

    # --- objects ----------------------------------------------------------------------------------

    async def _create(self, manifest: Manifest) -> Any:
        """Creates an object, or reads it when it exists already (a job carried on)."""
        kind = manifest["kind"]
        name = manifest["metadata"]["name"]
        ns = self.settings.namespace
        # Read back on 409 only what the engine goes on with: the anchor (its uid is every other
        # object's owner) and a pod (the watcher's first view of it). A Secret, a claim or a
        # policy that exists already is the one this job made; the Role grants no read of them.
        operations: dict[str, tuple[Any, Any]] = {
            "ConfigMap": (self.core.create_namespaced_config_map, self.core.read_namespaced_config_map),
            "Secret": (self.core.create_namespaced_secret, None),
            "PersistentVolumeClaim": (self.core.create_namespaced_persistent_volume_claim, None),
            "Pod": (self.core.create_namespaced_pod, self.core.read_namespaced_pod),
            "NetworkPolicy": (self.networking.create_namespaced_network_policy, None),
        }
        create, read = operations[kind]
        model = getattr(client, {"NetworkPolicy": "V1NetworkPolicy"}.get(kind, f"V1{kind}"))
        try:
            try:
                return await create(ns, model.from_dict(manifest))
            except ApiException as exc:
                if exc.status != 409:
                    raise self._api_error(f"creating the job's {kind}", exc) from exc
            if read is None:
                return None
            return await read(name, ns)
        except _UNREACHABLE as exc:
            log.warning(
                "kubernetes API server unreachable", doing=f"creating the job's {kind}", error=repr(exc)
            )
            raise BackendError("the cluster's API server could not be reached") from exc

    @staticmethod
    def _api_error(doing: str, exc: ApiException) -> BackendError:
        log.warning(
            "kubernetes API call failed", doing=doing, status=exc.status, reason=exc.reason, body=exc.body
        )
        return BackendError(f"the cluster refused {doing} (HTTP {exc.status} {exc.reason or ''})".rstrip())

    async def _anchor(self, manifests: JobManifests) -> Owner:
        job_id = manifests.job_id
        owner = self._owners.get(job_id)
        if owner is None:
            anchor = await self._create(manifests.anchor())
            owner = Owner(anchor.metadata.name, anchor.metadata.uid)
            self._owners[job_id] = owner
        return owner

    async def _claim(self, job_id: str) -> None:
        """A phase of this job is about to run here: it is no orphan. Waits for a sweep that
        was deleting it (the job then starts from scratch)."""
        self._active.add(job_id)
        deleting = self._deleting.get(job_id)
        if deleting is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(deleting)

    # --- pods -------------------------------------------------------------------------------------

    async def _delete_pod(self, name: str) -> None:
        with contextlib.suppress(ApiException, *_UNREACHABLE):
            await self.core.delete_namespaced_pod(name, self.settings.namespace, grace_period_seconds=0)

    async def _run_pod(
        self,
        job_id: str,
        manifest: Manifest | None,
        name: str,
        run_seconds: float,
        on_started: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> PodEnd:
        """Creates the pod (unless it exists: a job carried on), waits for it to start, then to
        end. Never waits for ever: start_timeout_seconds to start, then the run's limit and a
        grace for the cluster to enforce it."""
        watcher = self.watcher
        assert watcher is not None
        if job_id in self._killed:
            return PodEnd(None, killed=True)
        if watcher.get(name) is None and manifest is not None:
            await watcher.observe(await self._create(manifest))
        killed = self._killed

        def started_or_over(pod: Pod | None) -> bool:
            return job_id in killed or pod is None or has_started(pod) or _hopeless(pod)

        try:
            pod = await watcher.wait_for(name, started_or_over, self.settings.start_timeout_seconds)
        except TimeoutError:
            pod = watcher.get(name)
            await self._delete_pod(name)
            return PodEnd(pod, never_started=why_not_started(pod))
        if job_id in killed:
            return PodEnd(pod, killed=True)
        if pod is None:
            pod = await self._confirm_gone(name)
            if pod is None:
                return PodEnd(None, never_started="it was deleted by someone else")
        if _hopeless(pod):
            await self._delete_pod(name)
            return PodEnd(pod, never_started=why_not_started(pod))

        follower = asyncio.create_task(on_started()) if on_started is not None else None
        try:
            pod = await watcher.wait_for(
                name,
                lambda p: job_id in killed or p is None or is_over(p),
                run_seconds + DEADLINE_GRACE_SECONDS,
            )
            if pod is None and job_id not in killed:
                pod = await self._confirm_gone(name)
                if pod is not None and not is_over(pod):
                    pod = await watcher.wait_for(
                        name, lambda p: job_id in killed or p is None or is_over(p), run_seconds
                    )
        except TimeoutError:
            log.warning("pod outlived its deadline; deleting it", pod=name)
            await self._delete_pod(name)
            return PodEnd(watcher.get(name), timed_out=True)
        finally:
            if follower is not None:
                await self._finish(follower)
        if job_id in killed:
            return PodEnd(pod, killed=True)
        if pod is None:
            return PodEnd(None, never_started="it was deleted by someone else")
        timed_out = (
            phase(pod) == FAILED and pod.status is not None and pod.status.reason == "DeadlineExceeded"
        )
        return PodEnd(pod, timed_out=timed_out)

    async def _confirm_gone(self, name: str) -> Pod | None:
        """The watcher lost sight of a pod: ask the API server (a relist may race a creation)."""
        assert self.watcher is not None
        try:
            pod = await self.core.read_namespaced_pod(name, self.settings.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        await self.watcher.observe(pod)
        return pod

    @staticmethod
    async def _finish(task: asyncio.Task[None]) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(task), LOG_DRAIN_SECONDS)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
        except Exception:
            log.exception("following the pod's log failed")

    async def _podtool_result(self, name: str, container: str) -> dict[str, Any] | None:
        try:
            text = await self.core.read_namespaced_pod_log(
                name, self.settings.namespace, container=container, tail_lines=20
            )
        except ApiException as exc:
            log.warning("could not read a podtool's log", pod=name, status=exc.status)
            return None
        except _UNREACHABLE as exc:
            log.warning("could not read a podtool's log", pod=name, error=repr(exc))
            return None
        return parse_result_line(text if isinstance(text, str) else str(text))

    async def _require_running(self) -> None:
        if self._detached:
            # The runner is about to cancel this job's run (the job goes on with the next
            # engine); an error here would end it instead.
            await self._never.wait()

    # --- phases -----------------------------------------------------------------------------------

    async def configure(self, job: JobContext, timeout: float) -> ConfigureOutcome:
        await self.start()
        await self._require_running()
        job_id = job.job_id
        await self._claim(job_id)
        manifests = JobManifests(self.settings, job)
        name = object_name(job_id, CONFIGURE)
        manifest = None
        assert self.watcher is not None
        if self.watcher.get(name) is None:
            try:
                plan, needs_storage = configure_plan(job, self.allow_private_input_hosts, self.storage)
            except PlanRefused as exc:
                return ConfigureOutcome(False, exc.failed_input, str(exc))
            env = self.configure_env
            if needs_storage:
                reads_results = self.storage.reads_result_store(job.input_urls)
                env = {**self.storage.podtools_env("configure", reads_results), **self.configure_env}
            if len(json.dumps(plan)) > MAX_PLAN_BYTES:
                failed = "algorithm" if len(job.spec.algorithm.raw_code) > MAX_PLAN_BYTES // 2 else "data"
                return ConfigureOutcome(
                    False, failed, f"the job's inputs are described by more than {MAX_PLAN_BYTES} bytes"
                )
            owner = await self._anchor(manifests)
            await self._create(manifests.data_volume_claim(owner))
            await self._create(manifests.configure_secret(owner, plan, env))
            anywhere = self.allow_private_input_hosts or needs_storage
            await self._create(manifests.configure_network_policy(owner, anywhere))
            manifest = manifests.configure_pod(owner, timeout, tuple(env))
        try:
            end = await self._run_pod(job_id, manifest, name, timeout)
        finally:
            if not self._detached:
                # The dataset locations and credentials are needed no longer.
                await self._delete_quietly("secret", object_name(job_id, CONFIGURE))
        if end.killed:
            return ConfigureOutcome(False, "data", "the job was stopped")
        if end.never_started:
            raise BackendError(f"the configuration pod did not run: {end.never_started}")
        if end.timed_out:
            return ConfigureOutcome(False, "data", f"fetching the inputs took longer than {timeout:.0f} s")
        result = await self._podtool_result(name, CONFIGURE)
        code = end.exit_code(CONFIGURE)
        if code == 0 and result and result.get("ok"):
            return ConfigureOutcome(True)
        if result and not result.get("ok"):
            return ConfigureOutcome(
                False, str(result.get("failed_input", "data")), str(result.get("reason", ""))
            )
        terminated = end.terminated(CONFIGURE)
        if terminated is not None and terminated.reason == "OOMKilled":
            return ConfigureOutcome(False, "data", "the configuration pod ran out of memory")
        # podtools answer every input's failure with a result: without one, the pod itself failed
        # (a wrong podtools image, a volume the pods cannot write), which is no fault of the data.
        log.warning("configure pod failed without a result", pod=name, exit_code=code, reason=end.reason)
        raise BackendError(f"the configuration pod failed (exit code {code})")

    async def run_algorithm(self, job: JobContext, on_output: OutputSink) -> AlgorithmOutcome:
        await self.start()
        await self._require_running()
        job_id = job.job_id
        await self._claim(job_id)
        env = job.environment
        algorithm = job.spec.algorithm
        runtime = algorithm.runtime or "python3"
        image = self.settings.runtime_images.get(runtime)
        if image is None:
            await on_output(
                job_pb2.LOG_STREAM_SYSTEM, f"[c2d] this engine has no runtime {runtime!r}\n".encode()
            )
            return AlgorithmOutcome(exit_code=127)
        entrypoint = list(algorithm.entrypoint) or [runtime, "$ALGO"]
        argv = [a.replace("$ALGO", "/data/transformations/algorithm") for a in entrypoint]
        manifests = JobManifests(self.settings, job)
        name = object_name(job_id, ALGORITHM)
        manifest = None
        assert self.watcher is not None
        if self.watcher.get(name) is None:
            owner = await self._anchor(manifests)
            # The policy exists before the pod does: not a packet leaves before it holds.
            await self._create(manifests.algorithm_network_policy(owner))
            manifest = manifests.algorithm_pod(owner, image, argv)

        async def follow_log() -> None:
            await self._follow_log(name, ALGORITHM, env.max_duration_seconds, on_output, env.disk_bytes)

        end = await self._run_pod(job_id, manifest, name, env.max_duration_seconds, on_started=follow_log)
        if end.killed:
            return AlgorithmOutcome(exit_code=137)
        if end.never_started:
            raise BackendError(f"the algorithm's pod did not run: {end.never_started}")
        terminated = end.terminated(ALGORITHM)
        code = terminated.exit_code if terminated is not None else 137
        if code is None:
            code = 137
        evicted = end.reason == "Evicted"
        storage_eviction = evicted and bool(re.search(r"ephemeral|emptydir|storage", end.message, re.I))
        if evicted and not storage_eviction:
            raise BackendError(f"the cluster evicted the algorithm's pod ({_safe_text(end.message, 160)})")
        usage = parse_usage(terminated.message if terminated is not None else None)
        return AlgorithmOutcome(
            exit_code=code,
            timed_out=end.timed_out,
            out_of_memory=terminated is not None and terminated.reason == "OOMKilled",
            disk_quota_exceeded=storage_eviction or (usage is not None and usage > env.disk_bytes),
        )

    async def _follow_log(
        self,
        name: str,
        container: str,
        limit_seconds: float,
        on_output: OutputSink,
        budget: int,
    ) -> None:
        """Streams the container's log to on_output as the API server sends it. Past the disk
        budget it keeps nothing more (the whole log is on the job's volume anyway). A broken
        stream is reopened from a little before it broke."""
        remaining = budget
        since: int | None = None
        while True:
            last = time.monotonic()
            try:
                response = await self.core.read_namespaced_pod_log_without_preload_content(
                    name,
                    self.settings.namespace,
                    container=container,
                    follow=True,
                    since_seconds=since,
                    _request_timeout=limit_seconds
                    + DEADLINE_GRACE_SECONDS
                    + self.settings.start_timeout_seconds,
                )
                try:
                    async for chunk in response.content.iter_any():
                        last = time.monotonic()
                        kept = chunk[: max(0, remaining)]
                        remaining -= len(chunk)
                        if kept:
                            await on_output(job_pb2.LOG_STREAM_STDOUT, kept)
                finally:
                    response.release()
                return
            except ApiException as exc:
                if exc.status in (400, 404):  # the container is gone or not there yet: nothing to follow
                    return
                log.warning("pod log stream failed", pod=name, status=exc.status)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.warning("pod log stream broke; reopening it", pod=name, error=repr(exc))
            assert self.watcher is not None
            if is_over(self.watcher.get(name)):
                return
            since = int(time.monotonic() - last) + 1
            await asyncio.sleep(0.5)

    async def publish(self, job: JobContext, timeout: float, include_outputs: bool = True) -> PublishOutcome:
        await self.start()
        await self._require_running()
        job_id = job.job_id
        await self._claim(job_id)
        manifests = JobManifests(self.settings, job)
        name = object_name(job_id, PUBLISH)
        manifest = None
        assert self.watcher is not None
        if self.watcher.get(name) is None:
            owner = await self._anchor(manifests)
            if self.publish_env:
                await self._create(manifests.secret(PUBLISH, owner, self.publish_env))
            await self._create(manifests.publish_network_policy(owner, self.store.remote))
            manifest = manifests.publish_pod(
                owner,
                timeout,
                include_outputs,
                tuple(self.publish_env),
                store=self.store.publish_argument(job_id),
                quota_bytes=self.storage.result_quota_bytes,
            )
        end = await self._run_pod(job_id, manifest, name, timeout)
        if end.killed:
            return PublishOutcome(False, "the job was stopped")
        if end.never_started:
            raise BackendError(f"the publishing pod did not run: {end.never_started}")
        if end.timed_out:
            return PublishOutcome(False, f"publishing took longer than {timeout:.0f} s")
        code = end.exit_code(PUBLISH)
        prepared = end.terminated("prepare-store", init=True)
        if prepared is not None and prepared.exit_code != 0:
            return PublishOutcome(
                False, f"the result store could not be prepared (exit code {prepared.exit_code})"
            )
        result = await self._podtool_result(name, PUBLISH)
        if code != 0 or not result or not result.get("ok"):
            log.warning("publish pod failed", pod=name, exit_code=code, reason=end.reason)
            reason = (result or {}).get("reason") or f"the publishing pod failed (exit code {code})"
            return PublishOutcome(False, str(reason))
        files = []
        for item in result.get("files", []):
            location = self._location(job_id, item)
            if location is None:
                return PublishOutcome(False, "publishing reported a file outside the job's results")
            files.append(
                PublishedFile(
                    name=str(item["name"]),
                    kind=job_pb2.RESULT_KIND_LOG if item.get("kind") == "log" else job_pb2.RESULT_KIND_OUTPUT,
                    size=int(item["size"]),
                    sha256=str(item["sha256"]),
                    location=location,
                )
            )
        return PublishOutcome(True, results=files)

    def _location(self, job_id: str, item: Mapping[str, Any]) -> str | None:
        """Where the provider finds a published file: in an S3 or IPFS store, the location podtools
        report (if it lies in the job's part of the store); in the shared volume, the path under
        the job's folder, as the provider sees it."""
        if self.store.remote:
            location = str(item.get("location", ""))
            return location if self.store.holds_job_result(job_id, location) else None
        path = PurePosixPath(str(item.get("path", "")))
        if path.is_absolute() or ".." in path.parts or not path.parts:
            return None
        return (self.results_dir / job_id / path).as_uri()

    # --- stop and clean-up ------------------------------------------------------------------------

    async def kill_unseen(self, job_id: str) -> None:
        """A job stopped before this engine saw it (since a restart): its pods, if an earlier
        engine left any, are deleted now; its other objects go with the sweep, or with the job if
        the operator dispatches it here again."""
        if self._detached or self._api is None or job_id in self._active:
            return
        await self._delete_pods(job_id)

    async def kill(self, job_id: str) -> None:
        if self._detached or self._api is None:
            return
        self._killed.add(job_id)
        assert self.watcher is not None
        await self.watcher.notify()
        await self._delete_pods(job_id)

    async def _delete_pods(self, job_id: str) -> None:
        try:
            await self.core.delete_collection_namespaced_pod(
                self.settings.namespace,
                label_selector=job_selector(self.settings.engine_id, job_id),
                grace_period_seconds=0,
            )
        except ApiException as exc:
            log.warning("could not delete the job's pods", status=exc.status)
        except _UNREACHABLE as exc:
            log.warning("could not delete the job's pods; the sweep will", error=repr(exc))

    async def delete_job_files(self, job_id: str, *, keep_results: bool) -> None:
        if self._detached:
            return
        if keep_results:
            self._results_kept.add(job_id)
        try:
            if self._api is not None:
                await self._delete_objects(job_id)
            self._results_kept.discard(job_id)
            if not keep_results:
                await self._delete_results(job_id)
        finally:
            self._killed.discard(job_id)
            self._owners.pop(job_id, None)
            self._active.discard(job_id)

    async def _delete_objects(self, job_id: str) -> None:
        """Everything the job created: pods first, the anchor last, and the anchor only once all
        the rest is gone. After a failure half-way the anchor stays, so that orphans() (which
        finds jobs by their anchors) finds the job again and the sweep retries; on a real
        cluster the owner references would also let the garbage collector take what is left.

        Pods, policies and the volume go by the job's labels; the Secrets by their names (the
        engine knows the two it may have made): a deletecollection answers the objects it
        deleted, Secrets' data included, and the engine must never read a Secret."""
        ns = self.settings.namespace
        selector = job_selector(self.settings.engine_id, job_id)
        core, networking = self.core, self.networking

        def delete_secret(part: str) -> Callable[[], Awaitable[Any]]:
            return lambda: core.delete_namespaced_secret(object_name(job_id, part), ns)

        deletions: list[Callable[[], Awaitable[Any]]] = [
            lambda: core.delete_collection_namespaced_pod(
                ns, label_selector=selector, grace_period_seconds=0
            ),
            lambda: networking.delete_collection_namespaced_network_policy(ns, label_selector=selector),
            delete_secret(CONFIGURE),
            delete_secret(PUBLISH),
            lambda: core.delete_collection_namespaced_persistent_volume_claim(ns, label_selector=selector),
        ]
        failures: list[object] = []
        assert self.watcher is not None
        for phase_name in (CONFIGURE, ALGORITHM, PUBLISH):
            await self.watcher.forget(object_name(job_id, phase_name))
        for delete in deletions:
            await self._try_delete(delete, failures)
        if not failures:
            await self._try_delete(
                lambda: core.delete_collection_namespaced_config_map(ns, label_selector=selector), failures
            )
        if failures:
            log.warning("the job's clean-up was incomplete; the sweep will retry", statuses=failures)
            raise BackendError("the job's resources could not all be deleted")

    @staticmethod
    async def _try_delete(delete: Callable[[], Awaitable[Any]], failures: list[object]) -> None:
        try:
            await delete()
        except ApiException as exc:
            if exc.status != 404:  # gone already (a Secret deleted earlier, or never made)
                failures.append(exc.status)
        except _UNREACHABLE as exc:
            failures.append(repr(exc))

    async def _delete_quietly(self, kind: str, name: str) -> None:
        ns = self.settings.namespace
        try:
            if kind == "secret":
                await self.core.delete_namespaced_secret(name, ns)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("delete failed", kind=kind, name=name, status=exc.status)
        except _UNREACHABLE as exc:  # deleted with the job, or by the sweep
            log.warning("delete failed", kind=kind, name=name, error=repr(exc))

    # --- orphans ----------------------------------------------------------------------------------

    async def orphans(self) -> list[str]:
        """Jobs this engine has objects of (by their anchors and pods) that no phase has claimed.
        A job's anchor is the last of its objects to go, so a job with anything left is found."""
        listed = await self.core.list_namespaced_config_map(
            self.settings.namespace, label_selector=job_selector(self.settings.engine_id)
        )
        found = {(cm.metadata.labels or {}).get(LABEL_JOB) for cm in listed.items if cm.metadata}
        assert self.watcher is not None
        for name in self.watcher.names():
            pod = self.watcher.get(name)
            if pod is not None and pod.metadata is not None:
                found.add((pod.metadata.labels or {}).get(LABEL_JOB))
        return sorted(j for j in found if j and j not in self._active and j not in self._deleting)

    async def sweep(self) -> list[str]:
        """Deletes every unclaimed job (after the grace a restarted engine gives the operator)."""
        if self._detached or time.monotonic() - self._started_at < self.settings.adopt_grace_seconds:
            return []
        swept = []
        for job_id in await self.orphans():
            log.info("deleting a job no operator claimed", job_id=job_id)
            task = asyncio.create_task(self._delete_orphan(job_id))
            self._deleting[job_id] = task
            try:
                await asyncio.shield(task)
                swept.append(job_id)
            except Exception:
                log.exception("could not delete an unclaimed job", job_id=job_id)
            finally:
                self._deleting.pop(job_id, None)
        return swept

    async def _delete_orphan(self, job_id: str) -> None:
        await self._delete_objects(job_id)
        if job_id in self._results_kept:  # a finished job's clean-up, retried
            self._results_kept.discard(job_id)
        else:
            await self._delete_results(job_id)

    async def _delete_results(self, job_id: str) -> None:
        """What a job that did not finish publishing left in the result store. Bounded for a
        remote store: one that is down must not hold up the job's end (its log says so)."""
        if not self.store.remote:
            await asyncio.to_thread(shutil.rmtree, self.results_dir / job_id, True)
            return
        try:
            await asyncio.wait_for(
                asyncio.to_thread(delete_job_results, self.storage, job_id), REMOTE_CLEANUP_SECONDS
            )
        except Exception as exc:
            log.warning("could not remove a job's files from the result store", error=repr(exc))

    async def _sweep_forever(self) -> None:
        period = max(1.0, min(60.0, self.settings.adopt_grace_seconds / 2))
        while True:
            await asyncio.sleep(period)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweeping unclaimed jobs failed")


__all__ = ["KubernetesBackend", "KubernetesSettings", "anchor_name"]
