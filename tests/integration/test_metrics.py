"""Each service serves Prometheus metrics over real HTTP: RPCs by method and code, jobs by status,
phase durations."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from c2d.provider.v1 import request_response_pb2 as pb
from tests.conftest import requires_bwrap
from tests.harness import CONSUMER, running_suite
from tests.integration import jobs


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@requires_bwrap
async def test_metrics_after_a_job(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a\n1\n")
    async with running_suite(tmp_path / "suite", metrics=True) as suite:
        ports = [suite.provider.metrics_port, suite.operator.metrics_port, suite.engine.metrics_port]
        assert all(port for port in ports)
        before = await asyncio.to_thread(scrape, suite.provider.metrics_port)  # type: ignore[arg-type]
        did = await jobs.publish_dataset(suite, [data])
        job = await jobs.wait_terminal(suite, (await jobs.start_raw(suite, [did], "print('ok')")).job_id)
        with pytest.raises(grpc.aio.AioRpcError):
            await suite.compute.GetJobDetails(
                pb.GetJobDetailsRequest(consumer_address=CONSUMER, job_id="bad")
            )

        for port in ports:  # one process here, one registry: every endpoint shows every metric
            after = await asyncio.to_thread(scrape, port)  # type: ignore[arg-type]
            start = "/c2d.provider.v1.ComputeService/Start"
            assert value(after, "c2d_grpc_server_handled_total", method=start, code="OK") >= 1 + value(
                before, "c2d_grpc_server_handled_total", method=start, code="OK"
            )
            details = "/c2d.provider.v1.ComputeService/GetJobDetails"
            assert value(after, "c2d_grpc_server_handled_total", method=details, code="INVALID_ARGUMENT") >= 1
            assert value(after, "c2d_grpc_server_handling_seconds_count", method=start) >= 1
            assert value(after, "c2d_jobs", status="FINISHED") >= 1, job.status_text
            assert value(after, "c2d_jobs", status="QUEUED") == 0
            for phase in ("configure", "algorithm", "publish"):
                assert value(after, "c2d_engine_phase_seconds_count", phase=phase) >= 1
            assert value(after, "c2d_job_status_changes_total", status="FINISHED") >= 1
            assert value(after, "c2d_engine_running_jobs") == 0
