"""All of a job's inputs together are bounded by its environment's disk (or C2D_MAX_INPUT_BYTES,
when smaller), in the plan either backend gives podtools configure."""

from __future__ import annotations

from dataclasses import replace

import pytest

from c2d.common.v1 import job_pb2
from c2d_common.storage import StorageSettings
from engine_svc.config import DEFAULT_ENVIRONMENTS
from engine_svc.domain.model import JobContext
from engine_svc.infra.kubernetes.plan import configure_plan

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("disk_bytes", "max_input_bytes", "limit"),
    [
        (4 * MiB, 0, 4 * MiB),  # C2D_MAX_INPUT_BYTES unset: the disk alone
        (4 * MiB, 1 * MiB, 1 * MiB),  # the smaller wins
        (4 * MiB, 9 * MiB, 4 * MiB),
        (0, 2 * MiB, 2 * MiB),  # an environment without a disk limit
        (0, 0, 0),
    ],
)
def test_the_smaller_limit_wins(disk_bytes: int, max_input_bytes: int, limit: int) -> None:
    assert StorageSettings(max_input_bytes=max_input_bytes).input_limit(disk_bytes) == limit


def test_the_kubernetes_plan_bounds_the_inputs_by_the_environment_s_disk() -> None:
    job = JobContext(
        job_id="ab" * 16,
        owner="0x" + "11" * 20,
        spec=job_pb2.JobSpec(algorithm=job_pb2.AlgorithmInput(raw_code=b"print(1)")),
        environment=replace(DEFAULT_ENVIRONMENTS[0], disk_bytes=3 * MiB),
    )
    plan, _ = configure_plan(job, allow_private_hosts=False, storage=StorageSettings())
    assert plan["max_input_bytes"] == 3 * MiB
