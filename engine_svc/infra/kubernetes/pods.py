"""The engine's view of its job pods, kept current by the watch API (never by polling).

List, then watch from the list's resourceVersion; when the server ends a watch, watch again from
the last resourceVersion seen; on 410 Gone (that version is no longer kept), list again. Phases
wait on this view for the state they need.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import aiohttp
import structlog
from kubernetes.aio import client, watch
from kubernetes.aio.client.exceptions import ApiException

log = structlog.get_logger(__name__)

Pod = client.V1Pod
PodPredicate = Callable[[Pod | None], bool]

RUNNING, SUCCEEDED, FAILED = "Running", "Succeeded", "Failed"


def phase(pod: Pod | None) -> str:
    return (pod.status.phase if pod is not None and pod.status is not None else None) or "Pending"


def is_over(pod: Pod | None) -> bool:
    return phase(pod) in (SUCCEEDED, FAILED)


def has_started(pod: Pod | None) -> bool:
    """Scheduled and some container (an init container included) has run."""
    if pod is None:
        return False
    if phase(pod) in (RUNNING, SUCCEEDED, FAILED):
        return True
    status = pod.status
    if status is None:
        return False
    for container in [*(status.init_container_statuses or []), *(status.container_statuses or [])]:
        if container.state is not None and (container.state.running or container.state.terminated):
            return True
    return False


class PodWatcher:
    def __init__(
        self,
        core: client.CoreV1Api,
        namespace: str,
        label_selector: str,
        watch_timeout_seconds: int = 240,
    ):
        self.core = core
        self.namespace = namespace
        self.label_selector = label_selector
        self.watch_timeout_seconds = watch_timeout_seconds
        self._pods: dict[str, Pod] = {}
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()
        # How many times the pods were listed: once at start, then once per 410 Gone or failure.
        self.lists = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="c2d-pod-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def get(self, name: str) -> Pod | None:
        return self._pods.get(name)

    def names(self) -> list[str]:
        return list(self._pods)

    async def observe(self, pod: Pod) -> None:
        """A pod we created or read ourselves: seen at once, whatever the watch's delay."""
        assert pod.metadata is not None and pod.metadata.name is not None
        async with self._changed:
            self._pods.setdefault(pod.metadata.name, pod)
            self._changed.notify_all()

    async def forget(self, name: str) -> None:
        async with self._changed:
            self._pods.pop(name, None)
            self._changed.notify_all()

    async def notify(self) -> None:
        """Wakes every waiter to test its condition again (a job was stopped)."""
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, name: str, predicate: PodPredicate, timeout: float | None) -> Pod | None:
        """The pod once predicate(pod) holds (None: the pod is gone); TimeoutError after timeout."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self._pods.get(name)))
            return self._pods.get(name)

    # --- list and watch ---------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            try:
                version = await self._list()
                backoff = 0.2
                while True:
                    version = await self._watch(version)
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == 410:
                    log.info("pod watch expired (410 Gone); listing again")
                    continue
                log.warning("pod watch failed; listing again", status=exc.status, reason=exc.reason)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                log.warning("pod watch failed; listing again", error=repr(exc))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def _list(self) -> str:
        listed = await self.core.list_namespaced_pod(self.namespace, label_selector=self.label_selector)
        async with self._changed:
            self._pods = {p.metadata.name: p for p in listed.items if p.metadata and p.metadata.name}
            self.lists += 1
            self._changed.notify_all()
        self.synced.set()
        return (listed.metadata.resource_version if listed.metadata else None) or ""

    async def _watch(self, version: str) -> str:
        """Follows changes from version until the server ends the watch; answers the last version."""
        stream = watch.Watch()
        try:
            events = stream.stream(
                self.core.list_namespaced_pod,
                self.namespace,
                label_selector=self.label_selector,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout_seconds,
                _request_timeout=self.watch_timeout_seconds + 30,
            )
            async for event in events:
                kind = event["type"]
                pod = event["object"]
                if kind in ("ADDED", "MODIFIED", "DELETED") and isinstance(pod, Pod):
                    assert pod.metadata is not None and pod.metadata.name is not None
                    async with self._changed:
                        if kind == "DELETED":
                            self._pods.pop(pod.metadata.name, None)
                        else:
                            self._pods[pod.metadata.name] = pod
                        self._changed.notify_all()
        finally:
            await stream.close()
        return stream.resource_version or version
