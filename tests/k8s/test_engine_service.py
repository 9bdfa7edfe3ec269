"""The engine as the operator sees it (its gRPC service) with C2D_BACKEND=kubernetes: a job runs
over RunJob; an engine that shuts down mid-job leaves the job running in the cluster, and the next
engine to get its RunJob finishes it."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from c2d.common.v1 import job_pb2
from c2d.engine.v1 import request_response_pb2 as pb
from c2d.engine.v1 import service_pb2_grpc
from c2d_common.env import ConfigError
from c2d_common.ids import new_job_id
from c2d_common.server import insecure_channel
from c2d_common.status import JobStatus
from engine_svc.config import EngineSettings
from engine_svc.infra.kubernetes import KubernetesBackend
from engine_svc.infra.local_backend import LocalBackend
from engine_svc.server import SERVICE_NAME, build_engine, report_ready_when_synced, start_backend
from tests.k8s.apiserver import ApiError, Route
from tests.k8s.cluster import Cluster
from tests.k8s.conftest import needs_bwrap
from tests.k8s.jobs import OWNER, SMALL, job_spec

SLOW = (
    "import time\nprint('working', flush=True)\ntime.sleep(2)\nopen('/data/outputs/done', 'w').write('1')\n"
)


def engine_settings(cluster: Cluster) -> EngineSettings:
    return EngineSettings(
        listen="127.0.0.1:0",
        results_dir=cluster.results_dir,
        work_dir=cluster.results_dir.parent / "work",
        environments=(SMALL,),
        allow_private_input_hosts=True,
    )


async def test_c2d_backend_chooses_the_backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = EngineSettings(
        listen="127.0.0.1:0", work_dir=tmp_path / "work", results_dir=tmp_path / "results"
    )
    monkeypatch.setenv("C2D_BACKEND", "kubernetes")
    monkeypatch.setenv("C2D_K8S_NAMESPACE", "jobs-here")
    _, runner = build_engine(settings)
    assert isinstance(runner.backend, KubernetesBackend)
    assert runner.backend.settings.namespace == "jobs-here"
    monkeypatch.setenv("C2D_BACKEND", "cloud")
    with pytest.raises(ConfigError):
        build_engine(settings)
    monkeypatch.delenv("C2D_BACKEND")
    if shutil.which("bwrap") is None:  # the local backend needs bubblewrap
        return
    _, runner = build_engine(settings)
    assert isinstance(runner.backend, LocalBackend)
    runner.backend.close()


async def run_over_grpc(port: int, job_id: str, spec: job_pb2.JobSpec) -> tuple[list[pb.StatusUpdate], bytes]:
    statuses: list[pb.StatusUpdate] = []
    output = b""
    async with insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.EngineServiceStub(channel)
        async for response in stub.RunJob(
            pb.RunJobRequest(job_id=job_id, owner=OWNER, spec=spec), timeout=60
        ):
            if response.HasField("status"):
                statuses.append(response.status)
            else:
                output += response.log.data
    return statuses, output


@pytest.mark.sandbox
@needs_bwrap
async def test_a_job_runs_through_the_engines_grpc_service(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    folder, url = inputs
    (folder / "data.txt").write_bytes(b"x")
    server, runner = build_engine(
        engine_settings(cluster), backend="kubernetes", kubernetes=cluster.settings()
    )
    await start_backend(runner)
    port = await server.start()
    try:
        job_id = new_job_id()
        statuses, output = await run_over_grpc(port, job_id, job_spec(f"{url}/data.txt", SLOW))
    finally:
        await server.stop()
    assert statuses[-1].status == JobStatus.FINISHED, statuses
    assert "done" in {r.name for r in statuses[-1].results}
    assert b"working" in output
    assert cluster.labelled(job_id) == []


@pytest.mark.sandbox
@needs_bwrap
async def test_an_engine_shut_down_mid_job_hands_the_job_to_the_next(
    cluster: Cluster, inputs: tuple[Path, str]
) -> None:
    folder, url = inputs
    (folder / "data.txt").write_bytes(b"x")
    spec = job_spec(f"{url}/data.txt", SLOW)
    job_id = new_job_id()

    first, runner = build_engine(
        engine_settings(cluster), backend="kubernetes", kubernetes=cluster.settings()
    )
    await start_backend(runner)
    port = await first.start()
    channel = insecure_channel(f"127.0.0.1:{port}")
    stream = service_pb2_grpc.EngineServiceStub(channel).RunJob(
        pb.RunJobRequest(job_id=job_id, owner=OWNER, spec=spec)
    )
    await cluster.wait_for_pod_phase(f"c2d-{job_id}-algorithm", "Running")
    await first.stop()  # SIGTERM's path: health NOT_SERVING, runs cancelled, streams ended
    seen = [r.status.status async for r in stream if r.HasField("status")]
    await channel.close()
    # The stream ended without a terminal status: the operator dispatches the job again.
    assert seen[-1] == JobStatus.RUNNING, seen
    assert ("pods", f"c2d-{job_id}-algorithm") in cluster.labelled(job_id), "the job still runs"

    second, runner = build_engine(
        engine_settings(cluster), backend="kubernetes", kubernetes=cluster.settings()
    )
    await start_backend(runner)
    port = await second.start()
    try:
        statuses, _ = await run_over_grpc(port, job_id, spec)
    finally:
        await second.stop()
    assert statuses[-1].status == JobStatus.FINISHED, statuses
    created = [p for m, p, _ in cluster.api.calls if m == "POST" and p.endswith("/pods")]
    assert len(created) == 3, "no phase ran twice"
    assert cluster.labelled(job_id) == []


async def test_the_engine_service_is_ready_only_once_the_cluster_answers(cluster: Cluster) -> None:
    """Readiness (the engine service's health) waits for the first list of pods: an API server
    that refuses it (down, or a Role without list) keeps the engine out of service, while the
    overall health (liveness) says the process is alive."""
    refusing = True

    def refuse_pod_lists(verb: str, route: Route) -> None:
        if refusing and route.plural == "pods" and verb in ("list", "watch"):
            raise ApiError(503, "ServiceUnavailable", "etcd is having a bad moment")

    cluster.api.faults.append(refuse_pod_lists)
    server, runner = build_engine(
        engine_settings(cluster), backend="kubernetes", kubernetes=cluster.settings()
    )
    await start_backend(runner)
    port = await server.start()
    ready = await report_ready_when_synced(server, runner)
    assert ready is not None
    channel = insecure_channel(f"127.0.0.1:{port}")
    health = health_pb2_grpc.HealthStub(channel)

    async def status(service: str) -> int:
        return (await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)).status

    try:
        await asyncio.sleep(1.5)
        assert await status(SERVICE_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await status("") == health_pb2.HealthCheckResponse.SERVING
        refusing = False
        await asyncio.wait_for(ready, 30)
        assert await status(SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING
    finally:
        ready.cancel()
        await channel.close()
        await server.stop()


async def test_the_local_backend_is_ready_at_once(tmp_path: Path) -> None:
    server, runner = build_engine(
        EngineSettings(work_dir=tmp_path / "work", results_dir=tmp_path / "results")
    )
    await server.start()
    try:
        assert await report_ready_when_synced(server, runner) is None
    finally:
        await server.stop()
