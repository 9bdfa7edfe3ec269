"""Resource limits of the algorithm's sandbox: a memory hog ends as out of memory with the flag set,
and a fork bomb is held by the process limit. Both rely on the engine's per-sandbox cgroups."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from c2d_common.status import JobStatus
from engine_svc.config import EngineSettings
from engine_svc.domain.model import Environment
from engine_svc.infra.cgroups import CgroupManager
from tests.conftest import requires_bwrap
from tests.harness import running_suite
from tests.integration import jobs

MiB = 1024 * 1024

pytestmark = [
    requires_bwrap,
    pytest.mark.skipif(
        CgroupManager.detect() is None, reason="this machine gives the engine no writable cgroups"
    ),
]

SMALL = Environment(
    id="local-limits",
    description="128 MiB memory, 32 processes",
    cpus=1.0,
    memory_bytes=128 * MiB,
    disk_bytes=64 * MiB,
    max_duration_seconds=60,
    max_processes=32,
)

MEMORY_HOG = r"""
print("allocating", flush=True)
hoard = []
while True:
    hoard.append(bytearray(16 << 20))  # touched: bytearray zero-fills
"""

FORK_BOMB = r"""
import json, os, time
children, refused = [], 0
for _ in range(200):
    try:
        pid = os.fork()
    except OSError:
        refused += 1
        continue
    if pid == 0:
        time.sleep(600)
        os._exit(0)
    children.append(pid)
with open("/data/outputs/forks.json", "w") as handle:
    json.dump({"started": len(children), "refused": refused}, handle)
"""


@pytest.fixture
async def suite(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = replace(EngineSettings(), environments=(SMALL,))
    async with running_suite(tmp_path / "suite", engine_settings=settings) as running:
        yield running


@pytest.fixture
async def dataset(suite, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    data = tmp_path / "data.csv"
    data.write_text("a\n1\n")
    return await jobs.publish_dataset(suite, [data])


async def test_memory_hog_ends_out_of_memory_with_the_flag(suite, dataset: str) -> None:  # type: ignore[no-untyped-def]
    started = await jobs.start_raw(suite, [dataset], MEMORY_HOG)
    job = await jobs.wait_terminal(suite, started.job_id)
    assert job.status == JobStatus.OUT_OF_MEMORY, job.status_text
    assert job.out_of_memory
    assert job.exit_code == 137  # killed by the kernel's OOM killer (SIGKILL)
    # Its logs are still published: what it printed before it died is there.
    _, stdout = await jobs.download(suite, job.job_id, "algorithm.stdout.log", jobs.LOG)
    assert b"allocating" in stdout
    assert not jobs.processes_mentioning(job.job_id)


async def test_fork_bomb_is_held_by_the_process_limit(suite, dataset: str) -> None:  # type: ignore[no-untyped-def]
    started = await jobs.start_raw(suite, [dataset], FORK_BOMB)
    job = await jobs.wait_terminal(suite, started.job_id)
    assert job.status == JobStatus.FINISHED, job.status_text
    _, data = await jobs.download(suite, job.job_id, "forks.json", jobs.OUTPUT)
    forks = jobs.report_from(data)
    assert forks["started"] < SMALL.max_processes
    assert forks["refused"] > 0
    # The sleeping children died with the sandbox: nothing of the job is left running.
    assert not jobs.processes_mentioning(job.job_id)
