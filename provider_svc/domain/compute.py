"""The compute front door's rules: which jobs may start, and who may see them.

Requests reach it authenticated (provider_svc.domain.auth): `consumer` is the proven signer. Start
checks, each with its own answer: the datasets exist and each has a compute service served by this
provider that permits algorithms; the algorithm is trusted (deny by default: a trusted DID with
matching checksums, a trusted publisher, or a raw algorithm where every dataset allows raw ones);
the environment fits; and a valid order on chain pays for each priced asset (one with a
datatoken), each order paying for one job only. In a paid environment every asset must be priced
(the order carries the environment's fee); a free environment waives the provider's fee, never a
dataset's price. Every read or control of a job checks its owner.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf import json_format, struct_pb2

from c2d.common.v1 import job_pb2
from c2d.provider.v1 import request_response_pb2 as pb
from c2d_common.errors import FailedPrecondition, InvalidArgument, NotFound, OutOfRange, PermissionDenied
from c2d_common.ids import check_job_id, check_request_id
from c2d_common.status import JobStatus
from provider_svc.domain.assets import (
    MAX_ENTRYPOINT_ARGS,
    Asset,
    AssetStore,
    check_did,
    check_runtime,
    file_location,
    parse_entrypoint,
)
from provider_svc.infra.ledger import Ledger, OrderSpend
from provider_svc.infra.operator_client import OperatorClient
from provider_svc.infra.result_store import ResultStore

MAX_DATASETS = 20
MAX_RAW_CODE_BYTES = 1024 * 1024
MAX_PARAMETERS_BYTES = 64 * 1024
MAX_ARG_CHARS = 4096
TX_ID_PATTERN = re.compile(r"0x[0-9a-fA-F]{64}")


class VerifiedOrderLike(Protocol):
    @property
    def tx_hash(self) -> str: ...

    @property
    def datatoken(self) -> str: ...


class OrderChecking(Protocol):
    """The chain side (provider_svc.infra.chain.OrderChecker)."""

    chain_id: int

    def quote_provider_fee(
        self,
        *,
        datatoken: str,
        service_index: int,
        environment_id: str,
        consumer: str,
        amount: int | None = None,
    ) -> Any: ...

    async def verify_order(
        self,
        *,
        tx_hash: str,
        datatoken: str,
        service_index: int,
        consumer: str,
        service_timeout_seconds: int,
        environment_id: str,
    ) -> VerifiedOrderLike: ...


@dataclass(frozen=True)
class OrderRef:
    did: str
    tx_id: str


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
    orders: list[OrderRef] = field(default_factory=list)


@dataclass(frozen=True)
class Payable:
    """An asset of a job that an order must pay for: its compute (or algorithm) service."""

    asset: Asset
    service_index: int
    service: dict[str, Any]


def _files(service: dict[str, Any]) -> list[job_pb2.FileLocation]:
    return [file_location(f) for f in service["files"]]


def _to_be_ordered(environment: job_pb2.ComputeEnvironment, payables: list[Payable]) -> list[Payable]:
    """The assets an order must pay for. In a paid environment, all of them (an asset without a
    datatoken is refused there: nothing could carry the environment's fee); in a free one, those
    with a price. Ocean's free environments likewise waive the compute fee, not the dataset's."""
    if not environment.free:
        return payables
    return [p for p in payables if p.service.get("datatokenAddress")]


def _no_chain(environment: job_pb2.ComputeEnvironment, payables: list[Payable]) -> str:
    if environment.free:
        priced = payables[0]
        return (
            f"{priced.asset.did} has a price (datatoken {priced.service.get('datatokenAddress')}), "
            "and this provider checks no chain, so it cannot take its order"
        )
    return (
        f"environment {environment.id} is paid, and this provider checks no chain: choose a free environment"
    )


def _public_job(job: job_pb2.Job) -> job_pb2.Job:
    """A job as its owner sees it: where the results are stored stays with the publisher."""
    shown = job_pb2.Job()
    shown.CopyFrom(job)
    for result in shown.results:
        result.ClearField("location")
    return shown


class ComputeFrontDoor:
    def __init__(
        self,
        assets: AssetStore,
        operator: OperatorClient,
        results: ResultStore,
        ledger: Ledger,
        provider_url: str,
        orders: OrderChecking | None = None,
    ):
        self.assets = assets
        self.operator = operator
        self.results = results
        self.ledger = ledger
        self.provider_url = provider_url
        # None: this provider checks no chain, and offers its free environments only.
        self.orders = orders

    @property
    def chain_id(self) -> int:
        return self.orders.chain_id if self.orders is not None else 0

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
        payables = [self._compute_service(dataset, environment) for dataset in datasets]

        algorithm, algorithm_asset = await self._algorithm(request, payables)
        runtime = algorithm.runtime or "python3"
        if environment.runtimes and runtime not in environment.runtimes:
            raise FailedPrecondition(
                f"environment {environment.id} has no runtime {runtime!r}; "
                f"it offers {', '.join(environment.runtimes)}"
            )
        request_id = request.request_id
        if algorithm_asset is not None and "datatokenAddress" in algorithm_asset.service:
            payables.append(algorithm_asset)
        priced = _to_be_ordered(environment, payables)
        if priced:
            spends = await self._check_orders(request, environment, priced)
            if not request_id:
                # Paid jobs are always idempotent: the same orders answer the same job, so a
                # consumer whose Start was lost never pays twice.
                ids = ",".join(sorted(f"{s.tx_id}/{s.datatoken}" for s in spends))
                request_id = "orders-" + hashlib.sha256(ids.encode()).hexdigest()[:32]
            await self.ledger.spend(spends, request.consumer, request_id)
        elif request.orders:
            raise InvalidArgument(
                f"environment {environment.id} is free and no asset of this job has a price: send no orders"
            )
        spec = job_pb2.JobSpec(
            datasets=[
                job_pb2.DatasetInput(
                    did=p.asset.did, files=_files(p.service), ddo=_struct(p.asset.public_ddo())
                )
                for p in payables[: len(datasets)]
            ],
            algorithm=algorithm,
            environment_id=environment.id,
            algorithm_parameters=request.parameters,
        )
        job = await self.operator.register(request.consumer, request_id, spec)
        return _public_job(job)

    def _compute_service(self, dataset: Asset, environment: job_pb2.ComputeEnvironment) -> Payable:
        """The seed's preconditions, each with its own answer."""
        if dataset.type != "dataset":
            raise FailedPrecondition(f"{dataset.did} is an algorithm, not a dataset")
        found = dataset.compute_service()
        if found is None:
            raise FailedPrecondition(
                f"dataset {dataset.did} has no compute service: it cannot be computed on"
            )
        index, service = found
        endpoint = service.get("serviceEndpoint", "")
        if self.provider_url and endpoint and endpoint.rstrip("/") != self.provider_url.rstrip("/"):
            raise FailedPrecondition(
                f"dataset {dataset.did} is served by {endpoint[:200]}, not by this provider "
                f"({self.provider_url}): send the job there"
            )
        compute = service.get("compute") or {}
        if not (
            compute.get("allowRawAlgorithm", False)
            or compute.get("publisherTrustedAlgorithms")
            or compute.get("publisherTrustedAlgorithmPublishers")
        ):
            raise FailedPrecondition(
                f"dataset {dataset.did}'s compute service permits no algorithm: it trusts none and "
                "allows no raw algorithm"
            )
        if environment.network_allowed and not compute.get("allowNetworkAccess", False):
            raise FailedPrecondition(
                f"dataset {dataset.did} does not allow network access, and environment "
                f"{environment.id} gives algorithms network: choose an environment without network"
            )
        return Payable(dataset, index, service)

    async def _check_orders(
        self, request: StartJob, environment: job_pb2.ComputeEnvironment, payables: list[Payable]
    ) -> list[OrderSpend]:
        if self.orders is None:
            raise FailedPrecondition(_no_chain(environment, payables))
        by_did: dict[str, str] = {}
        for order in request.orders:
            check_did(order.did, "orders.did")
            if not TX_ID_PATTERN.fullmatch(order.tx_id):
                raise InvalidArgument(f"orders.tx_id {order.tx_id[:80]!r} is not a transaction hash")
            if order.did in by_did:
                raise InvalidArgument(f"{order.did} has two orders")
            by_did[order.did] = order.tx_id.lower()
        wanted = {p.asset.did for p in payables}
        extra = set(by_did) - wanted
        if extra:
            raise InvalidArgument(f"an order names {sorted(extra)[0]}, which this job does not use")
        spends = []
        for payable in payables:
            datatoken = payable.service.get("datatokenAddress")
            if not datatoken:
                raise FailedPrecondition(
                    f"{payable.asset.did} has no datatoken: it can run in free environments only"
                )
            tx_id = by_did.get(payable.asset.did)
            if tx_id is None:
                why = (
                    f"its datatoken {datatoken} prices it (a free environment waives only the provider's fee)"
                    if environment.free
                    else f"environment {environment.id} is paid"
                )
                raise FailedPrecondition(
                    f"no order for {payable.asset.did}: {why}; order it (InitializeCompute, then "
                    "the datatoken's startOrder) and send the tx id"
                )
            verified = await self.orders.verify_order(
                tx_hash=tx_id,
                datatoken=datatoken,
                service_index=payable.service_index,
                consumer=request.consumer,
                service_timeout_seconds=int(payable.service.get("timeout", 0)),
                environment_id=environment.id,
            )
            spends.append(
                OrderSpend(tx_id=verified.tx_hash.lower(), datatoken=datatoken.lower(), did=payable.asset.did)
            )
        return spends

    async def initialize(
        self, consumer: str, dataset_dids: list[str], algorithm_did: str, environment_id: str
    ) -> list[pb.OrderQuote]:
        """What each asset's order must carry: datatoken, service index, a provider fee signed here."""
        if not dataset_dids or not dataset_dids[0]:
            raise InvalidArgument("dataset_did is required")
        if len(dataset_dids) > MAX_DATASETS:
            raise InvalidArgument(f"a job takes at most {MAX_DATASETS} datasets")
        environment = await self._environment(environment_id)
        payables = [
            self._compute_service(self.assets.get(check_did(d, "dataset did")), environment)
            for d in dataset_dids
        ]
        if algorithm_did:
            algorithm = self.assets.get(check_did(algorithm_did, "algorithm_did"))
            if algorithm.type != "algorithm":
                raise FailedPrecondition(f"{algorithm.did} is a dataset, not an algorithm")
            index, service = algorithm.algorithm_service()
            if "datatokenAddress" in service:
                payables.append(Payable(algorithm, index, service))
        payables = _to_be_ordered(environment, payables)
        if not payables:
            return []
        if self.orders is None:
            raise FailedPrecondition(_no_chain(environment, payables))
        quotes = []
        for payable in payables:
            datatoken = payable.service.get("datatokenAddress")
            if not datatoken:
                raise FailedPrecondition(
                    f"{payable.asset.did} has no datatoken: it can run in free environments only"
                )
            fee = self.orders.quote_provider_fee(
                datatoken=datatoken,
                service_index=payable.service_index,
                environment_id=environment.id,
                consumer=consumer,
                # A free environment's quote is for the dataset's order alone: no fee to pay.
                amount=0 if environment.free else None,
            )
            quotes.append(
                pb.OrderQuote(
                    did=payable.asset.did,
                    datatoken_address=datatoken,
                    service_index=payable.service_index,
                    service_id=str(payable.service.get("id", "")),
                    provider_fee=_fee_message(fee),
                    validity_seconds=int(payable.service.get("timeout", 0)),
                )
            )
        return quotes

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
        self, request: StartJob, payables: list[Payable]
    ) -> tuple[job_pb2.AlgorithmInput, Payable | None]:
        if request.raw_algorithm is not None:
            raw = request.raw_algorithm
            for payable in payables:
                if not (payable.service.get("compute") or {}).get("allowRawAlgorithm", False):
                    raise PermissionDenied(
                        f"dataset {payable.asset.did} does not allow raw algorithms: "
                        "use an algorithm asset it trusts"
                    )
            if not raw.code:
                raise InvalidArgument("raw_algorithm.code is empty")
            if len(raw.code) > MAX_RAW_CODE_BYTES:
                raise InvalidArgument(f"raw_algorithm.code is larger than {MAX_RAW_CODE_BYTES} bytes")
            entrypoint = _check_entrypoint(raw.entrypoint)
            runtime = check_runtime(raw.runtime or "python3", "raw_algorithm.runtime")
            return job_pb2.AlgorithmInput(raw_code=raw.code, entrypoint=entrypoint, runtime=runtime), None
        if not request.algorithm_did:
            raise InvalidArgument("an algorithm is required: algorithm_did or raw_algorithm")
        algorithm = self.assets.get(check_did(request.algorithm_did, "algorithm_did"))
        if algorithm.type != "algorithm":
            raise FailedPrecondition(f"{algorithm.did} is a dataset, not an algorithm")
        checksums = algorithm.checksums()
        for payable in payables:
            _check_trusted(payable, algorithm, checksums.files, checksums.container)
        container = (algorithm.ddo["metadata"].get("algorithm") or {}).get("container") or {}
        index, service = algorithm.algorithm_service()
        return (
            job_pb2.AlgorithmInput(
                did=algorithm.did,
                files=_files(service),
                entrypoint=parse_entrypoint(container.get("entrypoint", "python3 $ALGO")),
                runtime=check_runtime(container.get("runtime", "python3"), "the algorithm's runtime"),
            ),
            Payable(algorithm, index, service),
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

    async def publish_results(
        self, consumer: str, job_id: str, name: str, result_names: list[str], compute: dict[str, Any] | None
    ) -> str:
        """A finished job's outputs as a new dataset asset owned by the consumer (the seed's
        "creation of new assets"): its files are the stored results, with their sha256 and size,
        so a later job fetches exactly these bytes; where they are stays private."""
        job, _ = await self._owned(consumer, job_id)
        if job.status != JobStatus.FINISHED:
            raise FailedPrecondition(
                f"job {job_id} has not finished successfully (status {job.status}): only a finished "
                "job's results can become an asset"
            )
        outputs = [r for r in job.results if r.kind == job_pb2.RESULT_KIND_OUTPUT]
        if result_names:
            by_name = {r.name: r for r in outputs}
            missing = [n for n in result_names if n not in by_name]
            if missing:
                raise NotFound(f"job {job_id} has no output named {missing[0][:200]!r}")
            outputs = [by_name[n] for n in dict.fromkeys(result_names)]
        if not outputs:
            raise FailedPrecondition(f"job {job_id} has no output files to publish")
        if len(name) > 512:
            raise InvalidArgument("name is longer than 512 characters")
        ddo = {
            "metadata": {
                "name": name or f"Results of job {job_id}",
                "type": "dataset",
                "description": f"Outputs of compute job {job_id}",
                "additionalInformation": {
                    "c2dJob": job_id,
                    "derivedFrom": list(job.dataset_dids),
                    "algorithm": job.algorithm_did or "raw",
                    "files": [r.name for r in outputs],
                },
            },
            "services": [
                {
                    "type": "compute",
                    "files": [
                        {"url": r.location, "checksum": r.sha256, "contentLength": r.size} for r in outputs
                    ],
                    "compute": compute
                    if compute is not None
                    else {"publisherTrustedAlgorithmPublishers": [consumer]},
                }
            ],
        }
        return self.assets.publish(consumer, ddo, own_results=True).did

    async def environments(self) -> list[job_pb2.ComputeEnvironment]:
        return await self.operator.environments()


def _check_trusted(payable: Payable, algorithm: Asset, files_checksum: str, container_checksum: str) -> None:
    """Deny by default: the dataset trusts the algorithm's DID with both checksums matching, or
    its publisher. (Ocean reads an empty trusted list as "trust all"; here it trusts none.)"""
    compute = payable.service.get("compute") or {}
    publishers = {str(p).lower() for p in compute.get("publisherTrustedAlgorithmPublishers", [])}
    if algorithm.publisher.lower() in publishers:
        return
    entries = [t for t in compute.get("publisherTrustedAlgorithms", []) if t.get("did") == algorithm.did]
    dataset = payable.asset.did
    if not entries:
        raise PermissionDenied(
            f"dataset {dataset} does not trust algorithm {algorithm.did} (nor its publisher): "
            "ask the dataset's publisher to add it, or use an algorithm it trusts"
        )
    entry = entries[0]
    if not files_checksum:
        raise PermissionDenied(
            f"algorithm {algorithm.did} declares no checksum for some of its files, so its code cannot "
            f"be pinned: dataset {dataset} can trust it by DID only once every file has one"
        )
    if entry.get("filesChecksum") != files_checksum:
        raise PermissionDenied(
            f"algorithm {algorithm.did}'s files are not those dataset {dataset} trusts "
            "(filesChecksum differs): the algorithm changed since it was trusted"
        )
    if entry.get("containerSectionChecksum") != container_checksum:
        raise PermissionDenied(
            f"algorithm {algorithm.did}'s container (entrypoint, runtime or image) is not the one "
            f"dataset {dataset} trusts (containerSectionChecksum differs)"
        )


def _fee_message(fee: Any) -> pb.ProviderFee:
    values = fee.to_dict() if hasattr(fee, "to_dict") else dict(fee)
    return pb.ProviderFee(
        provider_fee_address=str(values["providerFeeAddress"]),
        provider_fee_token=str(values["providerFeeToken"]),
        provider_fee_amount=str(values["providerFeeAmount"]),
        v=int(values["v"]),
        r=str(values["r"]),
        s=str(values["s"]),
        valid_until=int(values["validUntil"]),
        provider_data=str(values["providerData"]),
    )


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
