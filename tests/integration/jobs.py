"""Helpers for the job integration tests: publish assets from local files, start raw algorithms,
follow a job through Watch, download its results and logs, and look for what a job left behind.

Everything goes through the provider's public gRPC API of a `tests.harness.Suite`, as a consumer
and a publisher would use it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format, struct_pb2

from c2d.common.v1 import job_pb2
from c2d.provider.v1 import request_response_pb2 as pb
from c2d_common.status import JobStatus
from tests.harness import CONSUMER, PUBLISHER, Suite

# Generous: a job here takes about a second, but the machine may be busy with other tests.
WAIT_SECONDS = 90.0

OUTPUT = job_pb2.RESULT_KIND_OUTPUT
LOG = job_pb2.RESULT_KIND_LOG


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def file_entry(path: Path, *, checksum: str | None = None, declare: bool = True) -> dict[str, Any]:
    """A DDO `files` item for a local file; with declare, its real sha256 and size (or the given
    checksum, right or wrong)."""
    entry: dict[str, Any] = {"url": path.as_uri()}
    if declare:
        data = path.read_bytes()
        entry["checksum"] = checksum if checksum is not None else sha256_hex(data)
        entry["contentLength"] = len(data)
    elif checksum is not None:
        entry["checksum"] = checksum
    return entry


def url_entry(url: str) -> dict[str, Any]:
    return {"url": url}


async def publish_ddo(suite: Suite, ddo: dict[str, Any]) -> str:
    response = await suite.assets.PublishAsset(
        pb.PublishAssetRequest(publisher_address=PUBLISHER, ddo=to_struct(ddo))
    )
    return response.did


async def publish_dataset(
    suite: Suite,
    files: Sequence[Path | dict[str, Any]],
    *,
    name: str = "dataset",
    compute: dict[str, Any] | None = None,
) -> str:
    """A dataset with a compute service; raw algorithms allowed unless `compute` says otherwise."""
    items = [f if isinstance(f, dict) else file_entry(f) for f in files]
    return await publish_ddo(
        suite,
        {
            "metadata": {"name": name, "type": "dataset"},
            "services": [
                {
                    "type": "compute",
                    "files": items,
                    "compute": compute if compute is not None else {"allowRawAlgorithm": True},
                }
            ],
        },
    )


async def publish_algorithm(
    suite: Suite, files: Sequence[Path | dict[str, Any]], *, entrypoint: str = "python3 $ALGO"
) -> str:
    items = [f if isinstance(f, dict) else file_entry(f) for f in files]
    return await publish_ddo(
        suite,
        {
            "metadata": {
                "name": "algorithm",
                "type": "algorithm",
                "algorithm": {"container": {"entrypoint": entrypoint}},
            },
            "services": [{"type": "compute", "files": items}],
        },
    )


async def trusted(suite: Suite, algorithm_did: str) -> dict[str, Any]:
    """A publisherTrustedAlgorithms entry that trusts the algorithm as it is now."""
    response = await suite.assets.GetAsset(pb.GetAssetRequest(did=algorithm_did))
    return {
        "did": algorithm_did,
        "filesChecksum": response.files_checksum,
        "containerSectionChecksum": response.container_section_checksum,
    }


async def public_ddo(suite: Suite, did: str) -> dict[str, Any]:
    response = await suite.assets.GetAsset(pb.GetAssetRequest(did=did))
    return json_format.MessageToDict(response.ddo)


async def start_raw(
    suite: Suite,
    dataset_dids: Sequence[str],
    code: str | bytes,
    *,
    parameters: dict[str, Any] | None = None,
    entrypoint: Sequence[str] = (),
    request_id: str = "",
    environment_id: str = "",
    consumer: str = CONSUMER,
) -> job_pb2.Job:
    request = pb.StartRequest(
        consumer_address=consumer,
        dataset_did=dataset_dids[0],
        additional_dataset_dids=list(dataset_dids[1:]),
        raw_algorithm=pb.RawAlgorithm(
            code=code.encode() if isinstance(code, str) else code, entrypoint=list(entrypoint)
        ),
        request_id=request_id,
        environment_id=environment_id,
    )
    if parameters is not None:
        request.algorithm_parameters.CopyFrom(to_struct(parameters))
    response = await suite.compute.Start(request)
    assert response.job_id == response.job.job_id
    return response.job


async def start_asset(
    suite: Suite, dataset_dids: Sequence[str], algorithm_did: str, *, consumer: str = CONSUMER
) -> job_pb2.Job:
    response = await suite.compute.Start(
        pb.StartRequest(
            consumer_address=consumer,
            dataset_did=dataset_dids[0],
            additional_dataset_dids=list(dataset_dids[1:]),
            algorithm_did=algorithm_did,
        )
    )
    return response.job


async def watch(suite: Suite, job_id: str, after_sequence: int = 0) -> list[pb.WatchResponse]:
    """Every message of a Watch stream, until the server ends it (after the terminal status)."""

    async def collect() -> list[pb.WatchResponse]:
        stream = suite.compute.Watch(
            pb.WatchRequest(consumer_address=CONSUMER, job_id=job_id, after_sequence=after_sequence)
        )
        return [message async for message in stream]

    async with asyncio.timeout(WAIT_SECONDS):
        return await collect()


async def wait_terminal(suite: Suite, job_id: str) -> job_pb2.Job:
    """The job once it has ended: followed with Watch until its terminal status, then read with
    GetJobDetails. (The job a Watch's first message carries can be older than its event; see
    test_job_path.test_watch_first_message_carries_the_job_as_of_its_event.)"""
    messages = await watch(suite, job_id)
    last = messages[-1]
    assert JobStatus(last.event.status).is_terminal, last
    assert last.HasField("job"), "the terminal Watch message carries the job"
    job = (await details(suite, job_id)).job
    assert job.status == last.event.status and job.sequence == last.event.sequence
    return job


async def wait_for_status(suite: Suite, job_id: str, status: JobStatus) -> job_pb2.JobEvent:
    """Follows the job until it reaches `status`; fails if it ends (or skips past it) first."""
    stream = suite.compute.Watch(pb.WatchRequest(consumer_address=CONSUMER, job_id=job_id))
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            async for message in stream:
                event = message.event
                if event.status == status:
                    return event
                if JobStatus(event.status).is_terminal or event.status > status:
                    raise AssertionError(
                        f"job {job_id} went to {JobStatus(event.status).name} ({event.status_text!r}) "
                        f"before reaching {status.name}"
                    )
    finally:
        stream.cancel()
    raise AssertionError(f"the Watch stream of {job_id} ended before {status.name}")


async def details(suite: Suite, job_id: str, consumer: str = CONSUMER) -> pb.GetJobDetailsResponse:
    return await suite.compute.GetJobDetails(
        pb.GetJobDetailsRequest(consumer_address=consumer, job_id=job_id)
    )


async def stop(suite: Suite, job_id: str) -> job_pb2.Job:
    response = await suite.compute.Stop(pb.StopRequest(consumer_address=CONSUMER, job_id=job_id))
    return response.job


async def download_messages(
    suite: Suite, job_id: str, name: str, kind: int = 0, offset: int = 0
) -> list[pb.GetResultResponse]:
    stream = suite.compute.GetResult(
        pb.GetResultRequest(consumer_address=CONSUMER, job_id=job_id, name=name, kind=kind, offset=offset)
    )
    async with asyncio.timeout(WAIT_SECONDS):
        return [message async for message in stream]


async def download(
    suite: Suite, job_id: str, name: str, kind: int = 0, offset: int = 0
) -> tuple[job_pb2.ResultFile, bytes]:
    """A result's bytes from `offset`, checking that the pieces follow each other without gaps."""
    messages = await download_messages(suite, job_id, name, kind, offset)
    assert messages, f"GetResult({name!r}) sent nothing"
    assert messages[0].HasField("file"), "the first GetResult message describes the file"
    position = offset
    for message in messages:
        assert message.offset == position, f"piece at {message.offset}, expected {position}"
        position += len(message.data)
    return messages[0].file, b"".join(m.data for m in messages)


async def logs(
    suite: Suite, job_id: str, *, follow: bool = False, after_sequence: int = 0
) -> list[job_pb2.LogChunk]:
    stream = suite.compute.GetLogs(
        pb.GetLogsRequest(
            consumer_address=CONSUMER, job_id=job_id, follow=follow, after_sequence=after_sequence
        )
    )
    async with asyncio.timeout(WAIT_SECONDS):
        return [message.chunk async for message in stream]


def log_text(chunks: Iterable[job_pb2.LogChunk], stream: int) -> str:
    return b"".join(c.data for c in chunks if c.stream == stream).decode(errors="replace")


def results_by_name(job: job_pb2.Job, kind: int) -> dict[str, job_pb2.ResultFile]:
    return {r.name: r for r in job.results if r.kind == kind}


def processes_mentioning(*needles: str) -> list[tuple[int, str]]:
    """Processes on this machine whose command line, or whose mounts, mention one of the needles.

    The mounts catch the processes inside a job's sandbox: their command line does not name the
    job, but the job's folders are bound into their mount namespace."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            mounts = (entry / "mountinfo").read_text(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if any(n in cmdline or n in mounts for n in needles):
            found.append((int(entry.name), cmdline))
    return found


def files_under(root: Path) -> set[str]:
    """Every file under root, as paths relative to it."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}


def report_from(data: bytes) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(data)
    return report
