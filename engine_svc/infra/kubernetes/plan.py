"""What podtools configure fetches in a job's configuration pod (podtools/configure.py's job.json).

The same plan as the local backend's, minus file:// inputs: a pod cannot see the engine's files.
s3:// and ipfs:// inputs are checked against the storage settings (the buckets the suite may read,
an IPFS node to read from) as the local backend checks them. The plan holds the datasets'
locations and the publisher's HTTP headers, so it only ever travels in the job's configure
Secret. Errors name the asset and the file's index, never a location.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlparse

from google.protobuf import json_format

from c2d.common.v1 import job_pb2
from c2d_common.storage import StorageRefused, StorageSettings
from engine_svc.domain.model import JobContext
from engine_svc.infra.http_inputs import http_options

# A Secret holds at most 1 MiB; leave room for podtools' credentials beside the plan.
MAX_PLAN_BYTES = 900 * 1024


class PlanRefused(ValueError):
    """An input this backend cannot fetch. `failed_input` says whose: "data" or "algorithm"."""

    def __init__(self, failed_input: str, reason: str):
        super().__init__(reason)
        self.failed_input = failed_input


def configure_plan(
    job: JobContext, allow_private_hosts: bool, storage: StorageSettings
) -> tuple[dict[str, Any], bool]:
    """The plan, and whether podtools need the S3/IPFS settings (credentials included) for it."""
    needs_storage = False

    def locate(location: job_pb2.FileLocation, what: str, failed_input: str) -> dict[str, Any]:
        nonlocal needs_storage
        scheme = urlparse(location.url).scheme
        entry: dict[str, Any] = {"url": location.url, "sha256": location.sha256, "size": location.size}
        if scheme in ("http", "https"):
            try:
                entry.update(http_options(location, what))
            except ValueError as exc:
                raise PlanRefused(failed_input, str(exc)) from None
        elif scheme in ("s3", "ipfs"):
            try:
                if scheme == "s3":
                    storage.check_s3_input(location.url)
                else:
                    storage.check_ipfs_input(location.url)
            except StorageRefused as exc:
                raise PlanRefused(failed_input, f"{what}: {exc}") from None
            needs_storage = True
        elif scheme == "file":
            raise PlanRefused(
                failed_input,
                f"{what} is a file:// URL, which only the local backend can read; publish it over https",
            )
        else:
            raise PlanRefused(
                failed_input, f"{what} has a URL scheme this engine does not fetch ({scheme[:20]!r})"
            )
        return entry

    datasets = [
        {
            "did": dataset.did,
            "files": [
                locate(f, f"dataset {dataset.did} file {index}", "data")
                for index, f in enumerate(dataset.files)
            ],
            "ddo": json_format.MessageToDict(dataset.ddo),
        }
        for dataset in job.spec.datasets
    ]
    algorithm = job.spec.algorithm
    plan = {
        "job_id": job.job_id,
        "datasets": datasets,
        "algorithm": {
            "did": algorithm.did,
            "files": [
                locate(f, f"algorithm file {index}", "algorithm") for index, f in enumerate(algorithm.files)
            ],
            "raw_code": base64.b64encode(algorithm.raw_code).decode(),
        },
        "algorithm_parameters": json_format.MessageToDict(job.spec.algorithm_parameters),
        "allow_private_hosts": allow_private_hosts,
        "stall_seconds": storage.input_stall_seconds,
        "parallel_fetches": storage.input_parallel_fetches,
        "max_input_bytes": storage.input_limit(job.environment.disk_bytes),
    }
    return plan, needs_storage
