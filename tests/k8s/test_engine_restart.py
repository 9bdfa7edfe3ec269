"""An engine that restarts finds its jobs again in the cluster by their labels: a job the operator
dispatches again is carried on where it was (no pod runs twice), one nobody claims is deleted."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from c2d_common.ids import new_job_id
from c2d_common.status import JobStatus
from engine_svc.domain.runner import StopOutcome
from engine_svc.infra.kubernetes import KubernetesBackend
from tests.k8s.cluster import Cluster
from tests.k8s.conftest import needs_bwrap
from tests.k8s.jobs import follow, job_spec, make_runner, start
from tests.k8s.test_backend_lifecycle import backend_for

pytestmark = [pytest.mark.sandbox, needs_bwrap]

# Counts its own runs in the job's outputs: a second run would say 2.
SLOW_ONCE = """\
import os, time
print('working', flush=True)
time.sleep(2)
runs = len(os.listdir('/data/outputs')) + 1
open(f'/data/outputs/run-{runs}', 'w').write('ran')
print('done')
"""


async def interrupt(backend: KubernetesBackend, following: asyncio.Task[object]) -> None:
    """The engine goes away mid-job the way SIGTERM takes it: the backend lets go of its jobs
    (they stay in the cluster), the runner's tasks are cancelled, the connection closes."""
    backend.detach()
    following.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await following


async def test_a_restarted_engine_carries_a_running_job_on(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    folder, url = inputs
    (folder / "data.txt").write_bytes(b"x")
    spec = job_spec(f"{url}/data.txt", SLOW_ONCE)
    job_id = new_job_id()

    first = backend_for(cluster)
    runner = make_runner(first)
    run = start(runner, spec, job_id)
    await cluster.wait_for_pod_phase(f"c2d-{job_id}-algorithm", "Running")
    assert run.task is not None
    await interrupt(first, run.task)
    await first.close()
    # The engine is gone; the job is not: its pod runs on, everything else waits in the cluster.
    left = cluster.labelled(job_id)
    assert ("pods", f"c2d-{job_id}-algorithm") in left
    assert ("configmaps", f"c2d-{job_id}") in left

    second = backend_for(cluster)
    try:
        await second.start()
        assert await second.orphans() == [job_id]
        # The operator dispatches the job again (RunJob), to the same engine id.
        seen = await follow(start(make_runner(second), spec, job_id))
    finally:
        await second.close()
    assert seen.status is JobStatus.FINISHED, seen.statuses
    outputs = {r.name for r in seen.final.results}
    assert "run-1" in outputs and "run-2" not in outputs, "the algorithm ran once"
    created = [p for m, p, _ in cluster.api.calls if m == "POST" and p.endswith("/pods")]
    assert len(created) == 3, "configure, algorithm and publish pods were each created once"
    assert cluster.labelled(job_id) == []


async def test_a_job_nobody_claims_after_a_restart_is_deleted(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    folder, url = inputs
    (folder / "data.txt").write_bytes(b"x")
    job_id = new_job_id()
    first = backend_for(cluster)
    run = start(make_runner(first), job_spec(f"{url}/data.txt", SLOW_ONCE), job_id)
    await cluster.wait_for_pod_phase(f"c2d-{job_id}-algorithm", "Running")
    assert run.task is not None
    await interrupt(first, run.task)
    await first.close()
    assert cluster.labelled(job_id)

    # The operator ended the job meanwhile (its engine was away too long): no RunJob comes.
    second = backend_for(cluster, adopt_grace_seconds=1)
    try:
        await second.start()
        await cluster.wait_until(lambda: not cluster.labelled(job_id), 15)
    finally:
        await second.close()
    assert cluster.labelled(job_id) == []
    assert not (cluster.results_dir / job_id).exists()


async def test_a_job_stopped_right_after_a_restart_has_its_pods_deleted_at_once(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    """The operator's Stop reaches the restarted engine before any RunJob: the job was not seen
    here, and its algorithm pod, which outlived the first engine, ends now rather than run until
    the sweep (adopt_grace_seconds, minutes in deploy/)."""
    folder, url = inputs
    (folder / "data.txt").write_bytes(b"x")
    job_id = new_job_id()
    first = backend_for(cluster)
    run = start(make_runner(first), job_spec(f"{url}/data.txt", "import time\ntime.sleep(600)\n"), job_id)
    await cluster.wait_for_pod_phase(f"c2d-{job_id}-algorithm", "Running")
    assert run.task is not None
    await interrupt(first, run.task)
    await first.close()

    second = backend_for(cluster, adopt_grace_seconds=3600)
    try:
        await second.start()
        runner = make_runner(second)
        assert await runner.stop(job_id) is StopOutcome.NOT_SEEN
        left = cluster.labelled(job_id)
        assert not [name for kind, name in left if kind == "pods"], left
        assert ("configmaps", f"c2d-{job_id}") in left, "the rest waits for the sweep or a RunJob"
        # Dispatched again after all: it is stopped at once, and then everything goes.
        seen = await follow(start(runner, job_spec(f"{url}/data.txt", SLOW_ONCE), job_id))
        assert seen.status is JobStatus.STOPPED, seen.statuses
    finally:
        await second.close()
    assert not [name for kind, name in cluster.labelled(job_id) if kind == "pods"]


async def test_a_job_of_another_engine_is_never_touched(cluster: Cluster, inputs: tuple[Path, str]) -> None:
    folder, url = inputs
    (folder / "data.txt").write_bytes(b"x")
    job_id = new_job_id()
    other = backend_for(cluster, engine_id="engine-other")
    following = asyncio.create_task(
        follow(start(make_runner(other), job_spec(f"{url}/data.txt", SLOW_ONCE), job_id))
    )
    await cluster.wait_for_pod_phase(f"c2d-{job_id}-algorithm", "Running")
    mine = backend_for(cluster, adopt_grace_seconds=0)
    try:
        await mine.start()
        assert await mine.orphans() == []
        assert await mine.sweep() == []
        seen = await following
    finally:
        await mine.close()
        await other.close()
    assert seen.status is JobStatus.FINISHED
