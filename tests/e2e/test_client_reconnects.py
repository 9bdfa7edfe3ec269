"""The shipped client (c2d_cli.client, which `c2d watch` and `c2d logs -f` use) outlives restarts:
its Watch and follow-logs streams, cut by a provider or operator killed with SIGKILL and started
again, open again from the last event or chunk they saw, so the caller gets every event once, in
order, to the terminal status, and every line of the algorithm's output once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from c2d.common.v1 import job_pb2
from c2d_cli.client import ProviderClient
from c2d_cli.main import dataset_ddo
from c2d_cli.processes import local_suite, restart_service
from c2d_common.status import JobStatus
from tests.conftest import requires_bwrap

pytestmark = [pytest.mark.e2e, requires_bwrap]

KEY = "0x" + "c7" * 32
# Prints a line a second for a while: some before the kills, some during, some after.
TICKER = "import time\nfor i in range(12):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.5)\n"


@pytest.mark.timeout(120)
async def test_watch_and_logs_resume_across_provider_and_operator_restarts(tmp_path: Path) -> None:
    data = tmp_path / "data" / "d.csv"
    data.parent.mkdir()
    data.write_text("a\n1\n")
    extra = {"C2D_FILE_URL_ROOTS": str(data.parent), "C2D_LOG_LEVEL": "warning"}
    async with (
        local_suite(tmp_path / "state", extra_env=extra) as suite,
        ProviderClient(suite.provider_address, KEY) as client,
    ):
        did = await client.publish_asset(dataset_ddo("d", [data.as_uri()]))
        started = await client.start([did], raw_code=TICKER.encode())
        job_id = started.job_id
        events: list[job_pb2.JobEvent] = []
        followed: list[bytes] = []
        running = asyncio.Event()

        async def watch() -> None:
            async for response in client.watch(job_id, after_sequence=started.job.sequence):
                events.append(response.event)
                if response.event.status == JobStatus.RUNNING:
                    running.set()

        async def follow_logs() -> None:
            async for chunk in client.get_logs(job_id, follow=True):
                if chunk.stream == job_pb2.LOG_STREAM_STDOUT:
                    followed.append(chunk.data)

        tasks = [asyncio.create_task(watch()), asyncio.create_task(follow_logs())]
        await asyncio.wait_for(running.wait(), 60)
        await asyncio.sleep(1.0)
        await restart_service(suite, "provider")
        await asyncio.sleep(1.0)
        await restart_service(suite, "operator")
        await asyncio.wait_for(asyncio.gather(*tasks), 90)
        history = (await client.get_job_details(job_id)).history
        stored = b"".join(
            [c.data async for c in client.get_logs(job_id) if c.stream == job_pb2.LOG_STREAM_STDOUT]
        )

    assert events[-1].status == JobStatus.FINISHED, [JobStatus(e.status).name for e in events]
    sequences = [e.sequence for e in events]
    assert sequences == list(range(started.job.sequence + 1, history[-1].sequence + 1)), sequences
    assert stored.decode().splitlines() == [f"tick {i}" for i in range(12)], stored
    assert b"".join(followed) == stored, followed


@pytest.mark.timeout(120)
async def test_what_a_job_did_while_the_operator_was_down_is_all_recorded(tmp_path: Path) -> None:
    """The operator is killed while a job runs and stays down until the job has ended on the
    engine: every status it went through meanwhile (publishing among them) and every line it
    printed are in the job's history and log once the operator is back, each once."""
    data = tmp_path / "data" / "d.csv"
    data.parent.mkdir()
    data.write_text("a\n1\n")
    extra = {"C2D_FILE_URL_ROOTS": str(data.parent), "C2D_LOG_LEVEL": "warning"}
    code = "import time\nfor i in range(6):\n    print(f'line {i}', flush=True)\n    time.sleep(0.3)\n"
    async with (
        local_suite(tmp_path / "state", extra_env=extra) as suite,
        ProviderClient(suite.provider_address, KEY) as client,
    ):
        did = await client.publish_asset(dataset_ddo("d", [data.as_uri()]))
        started = await client.start([did], raw_code=code.encode())
        async for response in client.watch(started.job_id):
            if response.event.status == JobStatus.RUNNING:
                break
        # Down for longer than the job has left to run: it ends while nobody follows it.
        await restart_service(suite, "operator", down_seconds=4.0)
        async for response in client.watch(started.job_id):
            if JobStatus(response.event.status).is_terminal:
                break
        details = await client.get_job_details(started.job_id)
        stored = b"".join(
            [c.data async for c in client.get_logs(started.job_id) if c.stream == job_pb2.LOG_STREAM_STDOUT]
        )
    statuses = [JobStatus(e.status) for e in details.history]
    assert statuses[-1] is JobStatus.FINISHED, statuses
    assert JobStatus.PUBLISHING in statuses, "a status the job passed through while the operator was down"
    assert len(statuses) == len(set(statuses)), statuses
    assert stored.decode().splitlines() == [f"line {i}" for i in range(6)], stored
