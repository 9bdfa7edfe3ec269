"""A small client over the provider's API: one method per RPC, plus verified downloads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from c2d.common.v1 import job_pb2, job_status_pb2
from c2d.provider.v1 import request_response_pb2 as pb
from c2d.provider.v1 import service_pb2_grpc
from c2d_common.result_wire import ResultPiece, decode_piece
from c2d_common.server import insecure_channel
from c2d_common.signing import address_of, signing_interceptors
from c2d_common.status import JobStatus


class ChecksumMismatch(Exception):
    pass


# How long watch and get_logs keep trying to reconnect a cut stream, and which failures they
# reconnect after (the provider restarting, or between it and the operator).
RECONNECT_SECONDS = 300.0
RECONNECTED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}
TERMINAL_STATUSES = frozenset(s for s in JobStatus if s.is_terminal)


class StreamLost(Exception):
    """A stream could not be opened again within its reconnect time."""


class _Reconnect:
    """Back-off between attempts to open a cut stream again: 0.1 s doubling to 2 s, for at most
    `seconds` of failed attempts in a row."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.reset()

    def reset(self) -> None:
        self.failing_since: float | None = None
        self.pause = 0.1

    async def wait_or_raise(self, cause: BaseException | None) -> None:
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        if now - self.failing_since >= self.seconds:
            if cause is not None:
                raise cause
            raise StreamLost(f"the stream ended early and could not be opened again in {self.seconds:g} s")
        await asyncio.sleep(self.pause)
        self.pause = min(self.pause * 2, 2.0)


class ProviderClient:
    """Signs every call with the consumer's (or publisher's) private key; learns the provider's
    address, which signatures name, from GetNonce when entered."""

    def __init__(self, address: str, private_key: str):
        self.address = address
        self.consumer = address_of(private_key)
        self.private_key = private_key
        self.provider_address = ""
        self.channel = insecure_channel(
            address, signing_interceptors({self.consumer: private_key}, lambda: self.provider_address)
        )
        self.compute = service_pb2_grpc.ComputeServiceStub(self.channel)
        self._get_result = self.channel.unary_stream(
            "/c2d.provider.v1.ComputeService/GetResult",
            request_serializer=pb.GetResultRequest.SerializeToString,
            response_deserializer=decode_piece,
        )
        self.assets = service_pb2_grpc.AssetServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> ProviderClient:
        try:
            self.provider_address = (await self.get_nonce()).provider_address
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # --- ComputeService -------------------------------------------------------------------------

    async def start(
        self,
        dataset_dids: list[str],
        *,
        algorithm_did: str = "",
        raw_code: bytes = b"",
        entrypoint: list[str] | None = None,
        runtime: str = "",
        environment_id: str = "",
        parameters: dict[str, Any] | None = None,
        request_id: str = "",
        orders: dict[str, str] | None = None,
    ) -> pb.StartResponse:
        request = pb.StartRequest(
            consumer_address=self.consumer,
            dataset_did=dataset_dids[0],
            additional_dataset_dids=dataset_dids[1:],
            environment_id=environment_id,
            request_id=request_id,
            orders=[pb.AssetOrder(did=did, tx_id=tx) for did, tx in (orders or {}).items()],
        )
        if algorithm_did:
            request.algorithm_did = algorithm_did
        else:
            request.raw_algorithm.CopyFrom(
                pb.RawAlgorithm(code=raw_code, entrypoint=entrypoint or [], runtime=runtime)
            )
        if parameters:
            request.algorithm_parameters.update(parameters)
        return await self.compute.Start(request, timeout=60)

    async def get_job_details(self, job_id: str) -> pb.GetJobDetailsResponse:
        return await self.compute.GetJobDetails(
            pb.GetJobDetailsRequest(consumer_address=self.consumer, job_id=job_id), timeout=30
        )

    async def stop(self, job_id: str) -> job_pb2.Job:
        response = await self.compute.Stop(
            pb.StopRequest(consumer_address=self.consumer, job_id=job_id), timeout=120
        )
        return response.job

    async def list_jobs(
        self, page_size: int = 0, page_token: str = "", statuses: list[int] | None = None
    ) -> pb.ListResponse:
        request = pb.ListRequest(
            consumer_address=self.consumer,
            page_size=page_size,
            page_token=page_token,
            statuses=statuses or [],  # type: ignore[arg-type]
        )
        return await self.compute.List(request, timeout=30)

    async def list_all(self, statuses: list[int] | None = None) -> AsyncIterator[job_pb2.Job]:
        token = ""
        while True:
            page = await self.list_jobs(page_size=100, page_token=token, statuses=statuses)
            for job in page.jobs:
                yield job
            token = page.next_page_token
            if not token:
                return

    async def watch(
        self, job_id: str, after_sequence: int = 0, reconnect_seconds: float = RECONNECT_SECONDS
    ) -> AsyncIterator[pb.WatchResponse]:
        """Every event of the job after after_sequence, in order, each once, until its terminal
        status. A stream cut on the way (a provider or operator restarting, a provider shutting
        down, which ends its streams) is opened again from the last event seen, for up to
        reconnect_seconds of failed attempts in a row (0: never)."""
        last = after_sequence
        reconnect = _Reconnect(reconnect_seconds)
        while True:
            request = pb.WatchRequest(consumer_address=self.consumer, job_id=job_id, after_sequence=last)
            try:
                async for response in self.compute.Watch(request):
                    if response.event.sequence <= last:
                        continue  # already seen before the cut
                    last = response.event.sequence
                    reconnect.reset()
                    yield response
                    if response.event.status in TERMINAL_STATUSES:
                        return
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RECONNECTED:
                    raise
                await reconnect.wait_or_raise(exc)
                continue
            # Ended without the terminal status: the provider is shutting down, or the job had
            # ended before after_sequence and nothing came after it.
            details = await self.get_job_details(job_id)
            if details.job.status in TERMINAL_STATUSES and details.history[-1].sequence <= last:
                return
            await reconnect.wait_or_raise(None)

    async def get_logs(
        self,
        job_id: str,
        follow: bool = False,
        after_sequence: int = 0,
        reconnect_seconds: float = RECONNECT_SECONDS,
    ) -> AsyncIterator[job_pb2.LogChunk]:
        """The job's log chunks after after_sequence; with follow, until the job ends, reconnecting
        from the last chunk seen when the stream is cut before (as watch does)."""
        last = after_sequence
        reconnect = _Reconnect(reconnect_seconds if follow else 0)
        while True:
            request = pb.GetLogsRequest(
                consumer_address=self.consumer, job_id=job_id, follow=follow, after_sequence=last
            )
            try:
                async for response in self.compute.GetLogs(request):
                    if response.chunk.sequence and response.chunk.sequence <= last:
                        continue
                    last = response.chunk.sequence or last
                    reconnect.reset()
                    yield response.chunk
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RECONNECTED:
                    raise
                await reconnect.wait_or_raise(exc)
                continue
            if not follow:
                return
            if (await self.get_job_details(job_id)).job.status in TERMINAL_STATUSES:
                # Over: what the cut stream had not brought yet is read once more, without
                # following, and that is the end.
                follow = False
                continue
            await reconnect.wait_or_raise(None)

    async def get_result(
        self, job_id: str, name: str, kind: int = 0, offset: int = 0
    ) -> AsyncIterator[ResultPiece]:
        """The file's pieces from offset, each read without copying its data (a memoryview into
        the received message; see c2d_common.result_wire)."""
        request = pb.GetResultRequest(
            consumer_address=self.consumer,
            job_id=job_id,
            name=name,
            kind=kind,  # type: ignore[arg-type]
            offset=offset,
        )
        async for piece in self._get_result(request):
            yield piece

    async def get_environments(self) -> list[job_pb2.ComputeEnvironment]:
        response = await self.compute.GetEnvironments(pb.GetEnvironmentsRequest(), timeout=30)
        return list(response.environments)

    async def get_nonce(self, address: str = "") -> pb.GetNonceResponse:
        return await self.compute.GetNonce(pb.GetNonceRequest(address=address or self.consumer), timeout=30)

    async def publish_results(
        self,
        job_id: str,
        name: str = "",
        result_names: list[str] | None = None,
        compute: dict[str, Any] | None = None,
    ) -> str:
        request = pb.PublishResultsRequest(
            consumer_address=self.consumer, job_id=job_id, name=name, result_names=result_names or []
        )
        if compute is not None:
            request.compute.update(compute)
        return (await self.compute.PublishResults(request, timeout=30)).did

    async def initialize_compute(
        self, dataset_dids: list[str], algorithm_did: str = "", environment_id: str = ""
    ) -> pb.InitializeComputeResponse:
        return await self.compute.InitializeCompute(
            pb.InitializeComputeRequest(
                consumer_address=self.consumer,
                dataset_did=dataset_dids[0],
                additional_dataset_dids=dataset_dids[1:],
                algorithm_did=algorithm_did,
                environment_id=environment_id,
            ),
            timeout=60,
        )

    # --- AssetService ---------------------------------------------------------------------------

    async def publish_asset(self, ddo: dict[str, Any]) -> str:
        message = struct_pb2.Struct()
        message.update(ddo)
        response = await self.assets.PublishAsset(
            pb.PublishAssetRequest(publisher_address=self.consumer, ddo=message), timeout=30
        )
        return response.did

    async def get_asset(self, did: str) -> dict[str, Any]:
        response = await self.assets.GetAsset(pb.GetAssetRequest(did=did), timeout=30)
        return json_format.MessageToDict(response.ddo)

    async def trusted_algorithm(self, did: str) -> dict[str, str]:
        """A publisherTrustedAlgorithms entry that pins the algorithm as it is published now."""
        response = await self.assets.GetAsset(pb.GetAssetRequest(did=did), timeout=30)
        if not response.container_section_checksum:
            raise ValueError(f"{did} is not an algorithm")
        if not response.files_checksum:
            raise ValueError(f"{did} declares no checksum for some of its files: it cannot be trusted by DID")
        return {
            "did": did,
            "filesChecksum": response.files_checksum,
            "containerSectionChecksum": response.container_section_checksum,
        }


def status_name(status: int) -> str:
    return job_status_pb2.JobStatus.Name(status).removeprefix("JOB_STATUS_") if status else "UNSPECIFIED"


def is_rpc_error(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError)
