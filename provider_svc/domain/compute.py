"""The compute front door's rules: which jobs may start, and who may see them.

Consumer authentication (signatures, nonces) and on-chain order checks come in later; every job
already has its owner, and every read or control of a job checks it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, struct_pb2

from c2d.common.v1 import job_pb2
from c2d_common.errors import FailedPrecondition, InvalidArgument, NotFound, OutOfRange, PermissionDenied
from c2d_common.ids import check_job_id, check_request_id
from provider_svc.domain.assets import (
    MAX_ENTRYPOINT_ARGS,
    Asset,
    AssetStore,
    check_did,
    check_runtime,
    parse_entrypoint,
)
from provider_svc.infra.operator_client import OperatorClient
from provider_svc.infra.result_store import LocalResultStore

MAX_DATASETS = 20
MAX_RAW_CODE_BYTES = 1024 * 1024
MAX_PARAMETERS_BYTES = 64 * 1024
MAX_ARG_CHARS = 4096


@dataclass(frozen=True)
class RawAlgorithmRequest:
    code: bytes
    entrypoint: list[str]
    runtime: str


@dataclass(frozen=True)
class StartJob:
    consumer: str
    dataset_dids: list[str]
    algorithm_did: str
    raw_algorithm: RawAlgorithmRequest | None
    environment_id: str
    parameters: struct_pb2.Struct
    request_id: str


def _files(asset: Asset, service: dict[str, Any]) -> list[job_pb2.FileLocation]:
    return [
        job_pb2.FileLocation(url=f["url"], sha256=f.get("checksum", ""), size=int(f.get("contentLength", 0)))
        for f in service["files"]
    ]


def _public_job(job: job_pb2.Job) -> job_pb2.Job:
    """A job as its owner sees it: where the results are stored stays with the publisher."""
    shown = job_pb2.Job()
    shown.CopyFrom(job)
    for result in shown.results:
        result.ClearField("location")
    return shown


class ComputeFrontDoor:
    def __init__(self, assets: AssetStore, operator: OperatorClient, results: LocalResultStore):
        self.assets = assets
        self.operator = operator
        self.results = results

    # --- start ----------------------------------------------------------------------------------

    async def start(self, request: StartJob) -> job_pb2.Job:
        check_request_id(request.request_id)
        if not request.dataset_dids or not request.dataset_dids[0]:
            raise InvalidArgument("dataset_did is required")
        if len(request.dataset_dids) > MAX_DATASETS:
            raise InvalidArgument(f"a job takes at most {MAX_DATASETS} datasets")
        if len(set(request.dataset_dids)) != len(request.dataset_dids):
            raise InvalidArgument("a dataset is named twice")
        for did in request.dataset_dids:
            check_did(did, "dataset did")
        if request.parameters.ByteSize() > MAX_PARAMETERS_BYTES:
            raise InvalidArgument(f"algorithm_parameters is larger than {MAX_PARAMETERS_BYTES} bytes")
        try:
            # The algorithm reads them as JSON, which has no NaN or Infinity.
            json.dumps(json_format.MessageToDict(request.parameters), allow_nan=False)
        except ValueError:
            raise InvalidArgument(
                "algorithm_parameters holds NaN or Infinity, which JSON cannot carry"
            ) from None
        environment = await self._environment(request.environment_id)

        datasets = [self.assets.get(did) for did in request.dataset_dids]
        services = []
        for dataset in datasets:
            if dataset.type != "dataset":
                raise FailedPrecondition(f"{dataset.did} is an algorithm, not a dataset")
            service = dataset.compute_service()
            if service is None:
                raise FailedPrecondition(
                    f"dataset {dataset.did} has no compute service: it cannot be computed on"
                )
            compute = service.get("compute") or {}
            if environment.network_allowed and not compute.get("allowNetworkAccess", False):
                raise FailedPrecondition(
                    f"dataset {dataset.did} does not allow network access, and environment "
                    f"{environment.id} gives algorithms network: choose an environment without network"
                )
            services.append(service)

        algorithm = await self._algorithm(request, datasets, services)
        runtime = algorithm.runtime or "python3"
        if environment.runtimes and runtime not in environment.runtimes:
            raise FailedPrecondition(
                f"environment {environment.id} has no runtime {runtime!r}; "
                f"it offers {', '.join(environment.runtimes)}"
            )
        spec = job_pb2.JobSpec(
            datasets=[
                job_pb2.DatasetInput(did=d.did, files=_files(d, s), ddo=_struct(d.public_ddo()))
                for d, s in zip(datasets, services, strict=True)
            ],
            algorithm=algorithm,
            environment_id=environment.id,
            algorithm_parameters=request.parameters,
        )
        job = await self.operator.register(request.consumer, request.request_id, spec)
        return _public_job(job)

    async def _environment(self, environment_id: str) -> job_pb2.ComputeEnvironment:
        environments = await self.operator.environments()
        if not environment_id:
            return environments[0]
        for environment in environments:
            if environment.id == environment_id:
                return environment
        known = ", ".join(e.id for e in environments)
        raise InvalidArgument(f"no environment {environment_id[:100]!r}; this provider offers: {known}")

    async def _algorithm(
        self, request: StartJob, datasets: list[Asset], services: list[dict[str, Any]]
    ) -> job_pb2.AlgorithmInput:
        if request.raw_algorithm is not None:
            raw = request.raw_algorithm
            for dataset, service in zip(datasets, services, strict=True):
                if not (service.get("compute") or {}).get("allowRawAlgorithm", False):
                    raise PermissionDenied(
                        f"dataset {dataset.did} does not allow raw algorithms: "
                        "use an algorithm asset it trusts"
                    )
            if not raw.code:
                raise InvalidArgument("raw_algorithm.code is empty")
            if len(raw.code) > MAX_RAW_CODE_BYTES:
                raise InvalidArgument(f"raw_algorithm.code is larger than {MAX_RAW_CODE_BYTES} bytes")
            entrypoint = _check_entrypoint(raw.entrypoint)
            runtime = check_runtime(raw.runtime or "python3", "raw_algorithm.runtime")
            return job_pb2.AlgorithmInput(raw_code=raw.code, entrypoint=entrypoint, runtime=runtime)
        if not request.algorithm_did:
            raise InvalidArgument("an algorithm is required: algorithm_did or raw_algorithm")
        algorithm = self.assets.get(check_did(request.algorithm_did, "algorithm_did"))
        if algorithm.type != "algorithm":
            raise FailedPrecondition(f"{algorithm.did} is a dataset, not an algorithm")
        for dataset, service in zip(datasets, services, strict=True):
            compute = service.get("compute") or {}
            trusted_dids = {
                str(t.get("did"))
                for t in compute.get("publisherTrustedAlgorithms", [])
                if isinstance(t, dict)
            }
            trusted_publishers = {
                str(p).lower() for p in compute.get("publisherTrustedAlgorithmPublishers", [])
            }
            if algorithm.did not in trusted_dids and algorithm.publisher not in trusted_publishers:
                raise PermissionDenied(f"dataset {dataset.did} does not trust algorithm {algorithm.did}")
        container = (algorithm.ddo["metadata"].get("algorithm") or {}).get("container") or {}
        algorithm_service = algorithm.ddo["services"][0]
        return job_pb2.AlgorithmInput(
            did=algorithm.did,
            files=_files(algorithm, algorithm_service),
            entrypoint=parse_entrypoint(container.get("entrypoint", "python3 $ALGO")),
            runtime=check_runtime(container.get("runtime", "python3"), "the algorithm's runtime"),
        )

    # --- a job's owner only -----------------------------------------------------------------------

    async def _owned(self, consumer: str, job_id: str) -> tuple[job_pb2.Job, list[job_pb2.JobEvent]]:
        check_job_id(job_id)
        response = await self.operator.get(job_id)
        if response.job.owner != consumer:
            raise PermissionDenied(f"job {job_id} belongs to another consumer")
        return response.job, list(response.history)

    async def details(self, consumer: str, job_id: str) -> tuple[job_pb2.Job, list[job_pb2.JobEvent]]:
        job, history = await self._owned(consumer, job_id)
        return _public_job(job), history

    async def stop(self, consumer: str, job_id: str) -> job_pb2.Job:
        await self._owned(consumer, job_id)
        return _public_job(await self.operator.stop(job_id))

    async def list_jobs(
        self, consumer: str, page_size: int, page_token: str, statuses: list[int]
    ) -> tuple[list[job_pb2.Job], str]:
        response = await self.operator.list_jobs(consumer, page_size, page_token, statuses)
        return [_public_job(j) for j in response.jobs], response.next_page_token

    async def watch(
        self, consumer: str, job_id: str, after_sequence: int
    ) -> AsyncIterator[tuple[job_pb2.JobEvent, job_pb2.Job | None]]:
        await self._owned(consumer, job_id)
        async for response in self.operator.watch(job_id, after_sequence):
            yield response.event, _public_job(response.job) if response.HasField("job") else None

    async def logs(
        self, consumer: str, job_id: str, follow: bool, after_sequence: int
    ) -> AsyncIterator[job_pb2.LogChunk]:
        await self._owned(consumer, job_id)
        async for chunk in self.operator.logs(job_id, follow, after_sequence):
            yield chunk

    async def result(
        self, consumer: str, job_id: str, name: str, kind: int, offset: int
    ) -> AsyncIterator[tuple[job_pb2.ResultFile | None, int, bytes]]:
        job, _ = await self._owned(consumer, job_id)
        if not name:
            raise InvalidArgument("name is required: one of the names in the job's results")
        matches = [r for r in job.results if r.name == name and (kind == 0 or r.kind == kind)]
        if not matches:
            raise NotFound(f"job {job_id} has no result named {name[:200]!r}")
        result = sorted(matches, key=lambda r: r.kind)[0]
        if offset < 0 or offset > result.size:
            raise OutOfRange(f"offset {offset} is outside the file (0 to {result.size})")
        shown = job_pb2.ResultFile()
        shown.CopyFrom(result)
        shown.ClearField("location")
        first = True
        async for position, data in self.results.read(result.location, offset):
            yield (shown if first else None), position, data
            first = False
        if first:  # an empty file, or a download resumed at its very end
            yield shown, offset, b""

    async def environments(self) -> list[job_pb2.ComputeEnvironment]:
        return await self.operator.environments()


def _check_entrypoint(entrypoint: list[str]) -> list[str]:
    if len(entrypoint) > MAX_ENTRYPOINT_ARGS:
        raise InvalidArgument(f"raw_algorithm.entrypoint has more than {MAX_ENTRYPOINT_ARGS} arguments")
    if any(len(a) > MAX_ARG_CHARS or "\0" in a for a in entrypoint):
        raise InvalidArgument("raw_algorithm.entrypoint has an argument that is too long or holds a NUL")
    return list(entrypoint)


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


__all__ = ["ComputeFrontDoor", "NotFound", "RawAlgorithmRequest", "StartJob"]
