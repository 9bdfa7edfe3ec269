"""The provider's access control on real servers: signed requests and nonces, owners, who may
publish (C2D_PUBLISHERS), DDO rules, trusted algorithms (deny by default, checksums pinned), and the
seed's preconditions.

Each rule that fails answers its own status code, with a message that says what to fix, and
nothing starts. Orders on chain are tested in test_paid_jobs.py (a real anvil node).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from web3 import Web3

from c2d.provider.v1 import request_response_pb2 as pb
from c2d.provider.v1 import service_pb2_grpc as provider_grpc
from c2d_common.server import insecure_channel
from c2d_common.signing import method_name, sign_request, signing_interceptors
from c2d_common.status import JobStatus
from provider_svc.config import ProviderSettings
from provider_svc.server import build_provider
from tests.conftest import requires_bwrap
from tests.harness import (
    CONSUMER,
    CONSUMER_KEY,
    NOBODY,
    OTHER_CONSUMER,
    OTHER_CONSUMER_KEY,
    PROVIDER,
    PROVIDER_KEY,
    PUBLISHER,
    SECOND_PUBLISHER,
    TEST_KEYS,
    Suite,
    running_suite,
    signed_channel,
)
from tests.integration import jobs

pytestmark = [requires_bwrap, pytest.mark.sandbox, pytest.mark.asyncio(loop_scope="module")]

T = 30
START = "c2d.provider.v1.ComputeService.Start"
DETAILS = "c2d.provider.v1.ComputeService.GetJobDetails"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def suite(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Suite]:
    async with running_suite(tmp_path_factory.mktemp("suite")) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def raw_stub(suite: Suite) -> AsyncIterator[provider_grpc.ComputeServiceStub]:
    """A channel that signs nothing: each test signs (or not) by hand."""
    channel = insecure_channel(suite.provider_address)
    yield provider_grpc.ComputeServiceStub(channel)
    await channel.close()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    (folder / "data.csv").write_bytes(b"a,b\n1,2\n")
    (folder / "algo.py").write_text("open('/data/outputs/out.txt', 'w').write('ran')\n")
    return folder


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def raw_dataset(suite: Suite, data_dir: Path) -> str:
    return await jobs.publish_dataset(suite, [data_dir / "data.csv"])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def algorithm(suite: Suite, data_dir: Path) -> str:
    return await jobs.publish_algorithm(suite, [data_dir / "algo.py"])


async def _last_nonce(stub: provider_grpc.ComputeServiceStub, address: str) -> int:
    return (await stub.GetNonce(pb.GetNonceRequest(address=address), timeout=T)).nonce


async def _signed(
    stub: provider_grpc.ComputeServiceStub, request: Any, method: str, key: str, nonce: int | None = None
) -> Any:
    if nonce is None:
        answer = await stub.GetNonce(pb.GetNonceRequest(address=jobs_signer(request)), timeout=T)
        assert answer.next_nonce == answer.nonce + 1
        nonce = answer.next_nonce
    sign_request(request, method, PROVIDER, key, nonce)
    return request


def jobs_signer(request: Any) -> str:
    return str(getattr(request, "consumer_address", "") or getattr(request, "publisher_address", ""))


def _start(did: str, code: bytes = b"print('hi')\n", consumer: str = CONSUMER) -> pb.StartRequest:
    return pb.StartRequest(
        consumer_address=consumer, dataset_did=did, raw_algorithm=pb.RawAlgorithm(code=code)
    )


async def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value.code(), raised.value.details() or ""


async def _jobs_of(suite: Suite, consumer: str) -> int:
    listed = await suite.compute.List(pb.ListRequest(consumer_address=consumer, page_size=1000), timeout=T)
    return len(listed.jobs)


# --- signatures and nonces ------------------------------------------------------------------------


async def test_a_signed_start_runs_and_the_nonce_is_spent(
    suite: Suite, raw_stub: provider_grpc.ComputeServiceStub, raw_dataset: str
) -> None:
    request = await _signed(raw_stub, _start(raw_dataset), START, CONSUMER_KEY)
    response = await raw_stub.Start(request, timeout=T)
    assert response.job.owner == CONSUMER
    assert await _last_nonce(raw_stub, CONSUMER) == request.auth.nonce
    job = await jobs.wait_terminal(suite, response.job_id)
    assert job.status == JobStatus.FINISHED, job.status_text


async def test_an_unsigned_call_is_unauthenticated(
    raw_stub: provider_grpc.ComputeServiceStub, raw_dataset: str
) -> None:
    code, details = await _code(raw_stub.Start(_start(raw_dataset), timeout=T))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "must be signed" in details
    code, _ = await _code(raw_stub.List(pb.ListRequest(consumer_address=CONSUMER), timeout=T))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    # A provider fee quote is bound to a consumer: only that consumer may ask for one.
    quote = pb.InitializeComputeRequest(consumer_address=CONSUMER, dataset_did=raw_dataset)
    code, _ = await _code(raw_stub.InitializeCompute(quote, timeout=T))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_a_signature_by_another_key_is_unauthenticated(
    suite: Suite, raw_stub: provider_grpc.ComputeServiceStub, raw_dataset: str
) -> None:
    before = await _jobs_of(suite, CONSUMER)
    # OTHER_CONSUMER signs a request that claims to come from CONSUMER.
    request = await _signed(raw_stub, _start(raw_dataset), START, OTHER_CONSUMER_KEY)
    code, details = await _code(raw_stub.Start(request, timeout=T))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert f"not by {CONSUMER}" in details
    assert await _jobs_of(suite, CONSUMER) == before


async def test_a_replayed_request_is_refused_and_starts_nothing(
    suite: Suite, raw_stub: provider_grpc.ComputeServiceStub, raw_dataset: str
) -> None:
    request = await _signed(raw_stub, _start(raw_dataset, b"print('once')\n"), START, CONSUMER_KEY)
    first = await raw_stub.Start(request, timeout=T)
    before = await _jobs_of(suite, CONSUMER)
    code, details = await _code(raw_stub.Start(request, timeout=T))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert details.startswith("stale nonce") and str(request.auth.nonce) in details
    assert await _jobs_of(suite, CONSUMER) == before
    await jobs.wait_terminal(suite, first.job_id)


async def test_a_stale_nonce_is_refused(raw_stub: provider_grpc.ComputeServiceStub) -> None:
    last = await _last_nonce(raw_stub, CONSUMER)
    request = pb.ListRequest(consumer_address=CONSUMER)
    await _signed(raw_stub, request, "c2d.provider.v1.ComputeService.List", CONSUMER_KEY, nonce=last + 10)
    await raw_stub.List(request, timeout=T)
    for stale in (last + 10, last + 5, 1):
        again = pb.ListRequest(consumer_address=CONSUMER, page_size=stale % 7 + 1)
        await _signed(raw_stub, again, "c2d.provider.v1.ComputeService.List", CONSUMER_KEY, nonce=stale)
        code, details = await _code(raw_stub.List(again, timeout=T))
        assert code == grpc.StatusCode.UNAUTHENTICATED and details.startswith("stale nonce")
    assert await _last_nonce(raw_stub, CONSUMER) == last + 10


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: setattr(r.raw_algorithm, "code", b"print('evil')\n"),
        lambda r: setattr(r, "environment_id", "local-small"),
        lambda r: r.algorithm_parameters.update({"extra": 1}),
        lambda r: setattr(r, "request_id", "changed"),
        lambda r: r.additional_dataset_dids.append("did:op:" + "1" * 64),
    ],
    ids=["code", "environment", "parameters", "request_id", "datasets"],
)
async def test_tampered_arguments_are_unauthenticated(
    suite: Suite, raw_stub: provider_grpc.ComputeServiceStub, raw_dataset: str, tamper: Any
) -> None:
    before = await _jobs_of(suite, CONSUMER)
    request = await _signed(raw_stub, _start(raw_dataset), START, CONSUMER_KEY)
    tamper(request)
    code, _ = await _code(raw_stub.Start(request, timeout=T))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert await _jobs_of(suite, CONSUMER) == before


async def test_a_signature_for_another_method_or_provider_is_refused(
    raw_stub: provider_grpc.ComputeServiceStub,
) -> None:
    request = pb.ListRequest(consumer_address=CONSUMER)
    nonce = await _last_nonce(raw_stub, CONSUMER) + 1
    sign_request(request, DETAILS, PROVIDER, CONSUMER_KEY, nonce)  # signed for GetJobDetails
    assert (await _code(raw_stub.List(request, timeout=T)))[0] == grpc.StatusCode.UNAUTHENTICATED
    elsewhere = pb.ListRequest(consumer_address=CONSUMER)
    sign_request(
        elsewhere, method_name("/c2d.provider.v1.ComputeService/List"), "0x" + "ee" * 20, CONSUMER_KEY, nonce
    )
    assert (await _code(raw_stub.List(elsewhere, timeout=T)))[0] == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("signature", "code"),
    [
        ("", grpc.StatusCode.UNAUTHENTICATED),
        ("0x1234", grpc.StatusCode.UNAUTHENTICATED),
        ("0x" + "zz" * 65, grpc.StatusCode.UNAUTHENTICATED),
        ("0x" + "00" * 65, grpc.StatusCode.UNAUTHENTICATED),
        ("0x" + "ff" * 65, grpc.StatusCode.UNAUTHENTICATED),
    ],
)
async def test_malformed_signatures_are_unauthenticated(
    raw_stub: provider_grpc.ComputeServiceStub, signature: str, code: grpc.StatusCode
) -> None:
    request = pb.ListRequest(
        consumer_address=CONSUMER, auth=pb.Authorization(nonce=2**40, signature=signature)
    )
    assert (await _code(raw_stub.List(request, timeout=T)))[0] == code


@pytest.mark.parametrize("nonce", [0, -1, 2**53, 2**63 - 1])
async def test_nonces_out_of_range_are_invalid(
    raw_stub: provider_grpc.ComputeServiceStub, nonce: int
) -> None:
    request = pb.ListRequest(
        consumer_address=CONSUMER, auth=pb.Authorization(nonce=nonce, signature="0x" + "00" * 65)
    )
    code, details = await _code(raw_stub.List(request, timeout=T))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "nonce" in details


async def test_concurrent_signed_calls_of_one_consumer_all_pass(suite: Suite, raw_dataset: str) -> None:
    """Nonces strictly increase, yet a client that fires many calls at once is served: the provider
    checks them in arrival order, and a call overtaken by a later nonce is signed again."""
    calls = [
        suite.compute.List(pb.ListRequest(consumer_address=CONSUMER, page_size=1), timeout=T)
        for _ in range(40)
    ]
    results = await asyncio.gather(*calls)
    assert len(results) == 40


async def test_many_streams_opened_at_once_over_several_channels_all_pass(
    suite: Suite, raw_dataset: str
) -> None:
    """What a dashboard does: hundreds of Watch streams at once, one key, several connections
    sharing the signer. Each stream waits for its authentication before the next is signed, so
    none is refused as stale (with four tries each, many were)."""
    started = await jobs.start_raw(suite, [raw_dataset], "print('watched')")
    await jobs.wait_terminal(suite, started.job_id)
    interceptors = signing_interceptors(TEST_KEYS, PROVIDER)
    channels = [insecure_channel(suite.provider_address, interceptors) for _ in range(4)]

    async def watch(index: int) -> int:
        stub = provider_grpc.ComputeServiceStub(channels[index % len(channels)])
        request = pb.WatchRequest(consumer_address=CONSUMER, job_id=started.job_id)
        statuses = [m.event.status async for m in stub.Watch(request, timeout=T)]
        return statuses[-1]

    try:
        finals = await asyncio.gather(*(watch(i) for i in range(400)))
    finally:
        for channel in channels:
            await channel.close()
    assert finals == [JobStatus.FINISHED] * 400


async def test_nonces_survive_a_provider_restart(suite: Suite, tmp_path: Path) -> None:
    settings = ProviderSettings(
        listen="127.0.0.1:0",
        operator_address=f"127.0.0.1:{suite.operator.port}",
        assets_dir=suite.root / "assets",
        results_dir=suite.root / "results",
        private_key=PROVIDER_KEY,
    )
    first = build_provider(settings)
    await first.start()
    channel = insecure_channel(f"127.0.0.1:{first.port}")
    stub = provider_grpc.ComputeServiceStub(channel)
    request = pb.ListRequest(consumer_address=OTHER_CONSUMER)
    await _signed(stub, request, "c2d.provider.v1.ComputeService.List", OTHER_CONSUMER_KEY)
    await stub.List(request, timeout=T)
    await channel.close()
    await first.stop()

    second = build_provider(settings)
    await second.start()
    channel = insecure_channel(f"127.0.0.1:{second.port}")
    try:
        stub = provider_grpc.ComputeServiceStub(channel)
        code, details = await _code(stub.List(request, timeout=T))
        assert code == grpc.StatusCode.UNAUTHENTICATED and details.startswith("stale nonce")
        assert await _last_nonce(stub, OTHER_CONSUMER) == request.auth.nonce
    finally:
        await channel.close()
        await second.stop()


async def test_get_nonce_names_the_provider(raw_stub: provider_grpc.ComputeServiceStub) -> None:
    response = await raw_stub.GetNonce(pb.GetNonceRequest(address="0x" + "42" * 20), timeout=T)
    assert response.nonce == 0 and response.provider_address == PROVIDER and response.chain_id == 0
    code, _ = await _code(raw_stub.GetNonce(pb.GetNonceRequest(address="nobody"), timeout=T))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_publishing_is_signed_by_the_publisher(suite: Suite, data_dir: Path) -> None:
    channel = insecure_channel(suite.provider_address)
    try:
        assets = provider_grpc.AssetServiceStub(channel)
        request = pb.PublishAssetRequest(
            publisher_address=PUBLISHER,
            ddo=jobs.to_struct(
                {
                    "metadata": {"name": "x", "type": "dataset"},
                    "services": [{"type": "compute", "files": [{"url": "https://example.org/x"}]}],
                }
            ),
        )
        code, _ = await _code(assets.PublishAsset(request, timeout=T))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        # Signed by a consumer who claims to be the publisher.
        sign_request(request, "c2d.provider.v1.AssetService.PublishAsset", PROVIDER, CONSUMER_KEY, 10**12)
        code, _ = await _code(assets.PublishAsset(request, timeout=T))
        assert code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await channel.close()


# --- who may publish (C2D_PUBLISHERS) ------------------------------------------------------------


@contextlib.asynccontextmanager
async def _provider_with_publishers(
    suite: Suite, state: Path, data_dir: Path, publishers: tuple[str, ...]
) -> AsyncIterator[Suite]:
    """Another provider in front of the suite's operator and engine, serving file:// data from
    data_dir (C2D_FILE_URL_ROOTS), with this C2D_PUBLISHERS; as a Suite whose stubs reach it."""
    provider = build_provider(
        ProviderSettings(
            listen="127.0.0.1:0",
            operator_address=f"127.0.0.1:{suite.operator.port}",
            assets_dir=state / "assets",
            results_dir=suite.root / "results",
            file_url_roots=(data_dir,),
            private_key=PROVIDER_KEY,
            publishers=publishers,
        )
    )
    await provider.start()
    channel = signed_channel(f"127.0.0.1:{provider.port}")
    try:
        yield dataclasses.replace(suite, provider=provider, channel=channel)
    finally:
        await channel.close()
        await provider.stop()


async def _publish_as(provider: Suite, publisher: str, ddo: dict[str, Any]) -> str:
    request = pb.PublishAssetRequest(publisher_address=publisher, ddo=jobs.to_struct(ddo))
    return (await provider.assets.PublishAsset(request, timeout=T)).did


def _dataset_ddo(files: list[dict[str, Any]], service_type: str = "compute") -> dict[str, Any]:
    return {
        "metadata": {"name": "d", "type": "dataset"},
        "services": [{"type": service_type, "files": files, "compute": {"allowRawAlgorithm": True}}],
    }


PUBLIC_FILE = {"url": "https://example.org/open-data.csv"}
COPY_INPUT = (
    "import json, os, shutil\n"
    "shutil.copy(f\"/data/inputs/{json.loads(os.environ['DIDS'])[0]}/0\", '/data/outputs/copy.csv')\n"
)


def _provider_side_ddos(data_dir: Path) -> dict[str, tuple[dict[str, Any], str]]:
    """DDOs that name a file the suite would read with its own access, however the URL is spelled,
    and where the refusal must point."""
    secret = data_dir / "data.csv"
    path = str(secret)
    return {
        "file url": (_dataset_ddo([jobs.file_entry(secret)]), "services[0].files[0]"),
        "upper-case scheme": (_dataset_ddo([{"url": "FILE://" + path}]), "services[0].files[0]"),
        "leading space": (_dataset_ddo([{"url": " file://" + path}]), "services[0].files[0]"),
        "no authority": (_dataset_ddo([{"url": "file:" + path}]), "services[0].files[0]"),
        "localhost": (_dataset_ddo([{"url": "file://localhost" + path}]), "services[0].files[0]"),
        "outside the roots": (_dataset_ddo([{"url": "file:///etc/passwd"}]), "services[0].files[0]"),
        "after a public file": (
            _dataset_ddo([PUBLIC_FILE, jobs.file_entry(secret)]),
            "services[0].files[1]",
        ),
        "in a second service": (
            {
                **_dataset_ddo([PUBLIC_FILE]),
                "services": [
                    {"type": "compute", "files": [PUBLIC_FILE], "compute": {"allowRawAlgorithm": True}},
                    {"type": "access", "files": [jobs.file_entry(secret)]},
                ],
            },
            "services[1].files[0]",
        ),
        "s3 url": (_dataset_ddo([{"url": "s3://suite-bucket/secret.csv"}]), "services[0].files[0]"),
        "s3 bucket and key": (
            _dataset_ddo([{"type": "s3", "bucket": "suite-bucket", "objectPath": "secret.csv"}]),
            "services[0].files[0]",
        ),
        "algorithm": (
            {
                "metadata": {"name": "a", "type": "algorithm", "algorithm": {"container": {}}},
                "services": [{"type": "access", "files": [jobs.file_entry(secret)]}],
            },
            "services[0].files[0]",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "file url",
        "upper-case scheme",
        "leading space",
        "no authority",
        "localhost",
        "outside the roots",
        "after a public file",
        "in a second service",
        "s3 url",
        "s3 bucket and key",
        "algorithm",
    ],
)
async def test_without_a_publisher_list_nobody_names_provider_side_files(
    suite: Suite, data_dir: Path, tmp_path: Path, case: str
) -> None:
    """The audit's attack: on `c2d services`' defaults any local key could publish file:///<cwd>/
    secret with raw algorithms allowed and read it back. Without C2D_PUBLISHERS, file:// and
    s3:// files (read with the suite's own access) are refused whoever publishes them."""
    ddo, where = _provider_side_ddos(data_dir)[case]
    async with _provider_with_publishers(suite, tmp_path, data_dir, ()) as provider:
        for publisher in (NOBODY, PUBLISHER):
            code, details = await _code(_publish_as(provider, publisher, ddo))
            assert code == grpc.StatusCode.PERMISSION_DENIED, details
            assert "C2D_PUBLISHERS" in details and where in details and publisher in details
            # Nothing tells a stranger which folders hold data.
            assert "C2D_FILE_URL_ROOTS" not in details and str(data_dir) not in details
        assert list((tmp_path / "assets").glob("*.json")) == [], "a refused DDO is not stored"


async def test_without_a_publisher_list_anyone_publishes_public_files(
    suite: Suite, data_dir: Path, tmp_path: Path
) -> None:
    async with _provider_with_publishers(suite, tmp_path, data_dir, ()) as provider:
        for files in ([PUBLIC_FILE], [{"type": "ipfs", "hash": "Qm" + "a" * 44}]):
            did = await _publish_as(provider, NOBODY, _dataset_ddo(files))
            assert (await jobs.public_ddo(provider, did))["id"] == did


async def test_a_publisher_list_admits_its_publishers_only(
    suite: Suite, data_dir: Path, tmp_path: Path
) -> None:
    # Listed as the checksummed address; the signer's lowercase address must match it.
    listed = Web3.to_checksum_address(PUBLISHER)
    async with _provider_with_publishers(suite, tmp_path, data_dir, (listed,)) as provider:
        did = await _publish_as(provider, PUBLISHER, _dataset_ddo([jobs.file_entry(data_dir / "data.csv")]))
        job = await jobs.start_raw(provider, [did], COPY_INPUT)
        finished = await jobs.wait_terminal(provider, job.job_id)
        assert finished.status == JobStatus.FINISHED, finished.status_text
        _, copied = await jobs.download(provider, job.job_id, "copy.csv", jobs.OUTPUT)
        assert copied == (data_dir / "data.csv").read_bytes()
        # The file roots still hold for listed publishers.
        code, details = await _code(
            _publish_as(provider, PUBLISHER, _dataset_ddo([{"url": "file:///etc/passwd"}]))
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "C2D_FILE_URL_ROOTS" in details
        # Anyone else may publish nothing at all, public files included.
        for ddo in (_dataset_ddo([PUBLIC_FILE]), _dataset_ddo([jobs.file_entry(data_dir / "data.csv")])):
            code, details = await _code(_publish_as(provider, SECOND_PUBLISHER, ddo))
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert "C2D_PUBLISHERS" in details and SECOND_PUBLISHER in details
        assert len(list((tmp_path / "assets").glob("*.json"))) == 1


async def test_a_job_owner_publishes_its_results_without_being_a_listed_publisher(
    suite: Suite, data_dir: Path, tmp_path: Path
) -> None:
    async with _provider_with_publishers(suite, tmp_path, data_dir, (PUBLISHER,)) as provider:
        did = await _publish_as(provider, PUBLISHER, _dataset_ddo([jobs.file_entry(data_dir / "data.csv")]))
        job = await jobs.start_raw(provider, [did], "open('/data/outputs/r.txt', 'w').write('r')")
        assert (await jobs.wait_terminal(provider, job.job_id)).status == JobStatus.FINISHED
        published = await provider.compute.PublishResults(
            pb.PublishResultsRequest(consumer_address=CONSUMER, job_id=job.job_id), timeout=T
        )
        assert (await jobs.public_ddo(provider, published.did))["id"] == published.did
        code, _ = await _code(_publish_as(provider, CONSUMER, _dataset_ddo([PUBLIC_FILE])))
        assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_a_publisher_list_of_star_lets_anyone_name_file_data(
    suite: Suite, data_dir: Path, tmp_path: Path
) -> None:
    async with _provider_with_publishers(suite, tmp_path, data_dir, ("*",)) as provider:
        await _publish_as(provider, NOBODY, _dataset_ddo([jobs.file_entry(data_dir / "data.csv")]))


# --- owners ---------------------------------------------------------------------------------------


async def test_only_the_owner_sees_or_controls_a_job(suite: Suite, raw_dataset: str) -> None:
    started = await jobs.start_raw(suite, [raw_dataset], "import time\ntime.sleep(30)\n")
    theirs = {
        "details": suite.compute.GetJobDetails(
            pb.GetJobDetailsRequest(consumer_address=OTHER_CONSUMER, job_id=started.job_id), timeout=T
        ),
        "stop": suite.compute.Stop(
            pb.StopRequest(consumer_address=OTHER_CONSUMER, job_id=started.job_id), timeout=T
        ),
    }
    for name, call in theirs.items():
        code, details = await _code(call)
        assert code == grpc.StatusCode.PERMISSION_DENIED, name
        assert "another consumer" in details
    for stream in (
        suite.compute.Watch(pb.WatchRequest(consumer_address=OTHER_CONSUMER, job_id=started.job_id)),
        suite.compute.GetLogs(pb.GetLogsRequest(consumer_address=OTHER_CONSUMER, job_id=started.job_id)),
        suite.compute.GetResult(
            pb.GetResultRequest(consumer_address=OTHER_CONSUMER, job_id=started.job_id, name="out.txt")
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in stream:
                pass
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    listed = await suite.compute.List(
        pb.ListRequest(consumer_address=OTHER_CONSUMER, page_size=1000), timeout=T
    )
    assert started.job_id not in {j.job_id for j in listed.jobs}
    # Untouched by all that: the owner stops it.
    stopped = await jobs.stop(suite, started.job_id)
    assert stopped.status == JobStatus.STOPPED


# --- trusted algorithms ---------------------------------------------------------------------------


async def _dataset_trusting(suite: Suite, data_dir: Path, compute: dict[str, Any]) -> str:
    return await jobs.publish_dataset(suite, [data_dir / "data.csv"], compute=compute)


async def test_a_trusted_algorithm_with_matching_checksums_runs(
    suite: Suite, data_dir: Path, algorithm: str
) -> None:
    did = await _dataset_trusting(
        suite, data_dir, {"publisherTrustedAlgorithms": [await jobs.trusted(suite, algorithm)]}
    )
    job = await jobs.wait_terminal(suite, (await jobs.start_asset(suite, [did], algorithm)).job_id)
    assert job.status == JobStatus.FINISHED, job.status_text
    _, data = await jobs.download(suite, job.job_id, "out.txt", jobs.OUTPUT)
    assert data == b"ran"


async def test_an_algorithm_the_dataset_does_not_trust_is_denied(
    suite: Suite, data_dir: Path, algorithm: str
) -> None:
    other = await jobs.publish_algorithm(suite, [data_dir / "algo.py"], entrypoint="python3 $ALGO --other")
    did = await _dataset_trusting(
        suite, data_dir, {"publisherTrustedAlgorithms": [await jobs.trusted(suite, other)]}
    )
    code, details = await _code(jobs.start_asset(suite, [did], algorithm))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert f"does not trust algorithm {algorithm}" in details


async def test_an_empty_trust_list_trusts_nothing(suite: Suite, data_dir: Path, algorithm: str) -> None:
    """Ocean reads an empty publisherTrustedAlgorithms as "allow all"; we do not."""
    did = await _dataset_trusting(
        suite, data_dir, {"publisherTrustedAlgorithms": [], "publisherTrustedAlgorithmPublishers": []}
    )
    code, details = await _code(jobs.start_asset(suite, [did], algorithm))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "permits no algorithm" in details


@pytest.mark.parametrize("field", ["filesChecksum", "containerSectionChecksum"])
async def test_a_checksum_mismatch_is_denied(
    suite: Suite, data_dir: Path, algorithm: str, field: str
) -> None:
    entry = await jobs.trusted(suite, algorithm)
    entry[field] = hashlib.sha256(b"another version").hexdigest()
    did = await _dataset_trusting(suite, data_dir, {"publisherTrustedAlgorithms": [entry]})
    code, details = await _code(jobs.start_asset(suite, [did], algorithm))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert f"({field} differs)" in details


async def test_an_algorithm_changed_where_it_is_stored_after_it_was_trusted_never_runs(
    suite: Suite, data_dir: Path
) -> None:
    """The trust names the checksums the DDO declares; the engine checks the bytes it fetches
    against them, so an algorithm file swapped at its location after the dataset trusted it ends
    the job as an algorithm provisioning failure, before anything of it ran."""
    path = data_dir / "swapped.py"
    path.write_text("open('/data/outputs/out.txt', 'w').write('trusted')\n")
    algorithm = await jobs.publish_algorithm(suite, [path])
    did = await _dataset_trusting(
        suite, data_dir, {"publisherTrustedAlgorithms": [await jobs.trusted(suite, algorithm)]}
    )
    # Same size, other bytes: only the checksum can tell.
    path.write_text("open('/data/outputs/out.txt', 'w').write('swapped')\n")
    job = await jobs.wait_terminal(suite, (await jobs.start_asset(suite, [did], algorithm)).job_id)
    assert job.status == JobStatus.ALGORITHM_PROVISIONING_FAILED, job.status_text
    assert "sha256" in job.status_text or "checksum" in job.status_text, job.status_text
    assert not jobs.results_by_name(job, jobs.OUTPUT), "nothing of the swapped algorithm ran"
    assert not any(e.status == JobStatus.RUNNING for e in (await jobs.details(suite, job.job_id)).history)


async def test_an_algorithm_without_file_checksums_cannot_be_trusted_by_did(
    suite: Suite, data_dir: Path
) -> None:
    unpinned = await jobs.publish_algorithm(suite, [jobs.file_entry(data_dir / "algo.py", declare=False)])
    response = await suite.assets.GetAsset(pb.GetAssetRequest(did=unpinned), timeout=T)
    assert response.files_checksum == "" and response.container_section_checksum
    entry = {
        "did": unpinned,
        "filesChecksum": "0" * 64,
        "containerSectionChecksum": response.container_section_checksum,
    }
    did = await _dataset_trusting(suite, data_dir, {"publisherTrustedAlgorithms": [entry]})
    code, details = await _code(jobs.start_asset(suite, [did], unpinned))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "declares no checksum" in details


async def test_a_trusted_publisher_s_algorithms_run(suite: Suite, data_dir: Path, algorithm: str) -> None:
    did = await _dataset_trusting(suite, data_dir, {"publisherTrustedAlgorithmPublishers": [PUBLISHER]})
    job = await jobs.wait_terminal(suite, (await jobs.start_asset(suite, [did], algorithm)).job_id)
    assert job.status == JobStatus.FINISHED, job.status_text
    elsewhere = await _dataset_trusting(suite, data_dir, {"publisherTrustedAlgorithmPublishers": [CONSUMER]})
    code, _ = await _code(jobs.start_asset(suite, [elsewhere], algorithm))
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_a_raw_algorithm_where_not_allowed_is_denied(
    suite: Suite, data_dir: Path, algorithm: str
) -> None:
    did = await _dataset_trusting(
        suite,
        data_dir,
        {"allowRawAlgorithm": False, "publisherTrustedAlgorithms": [await jobs.trusted(suite, algorithm)]},
    )
    code, details = await _code(jobs.start_raw(suite, [did], "print(1)"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "does not allow raw algorithms" in details


async def test_every_dataset_of_a_job_must_trust_the_algorithm(
    suite: Suite, data_dir: Path, algorithm: str, raw_dataset: str
) -> None:
    trusting = await _dataset_trusting(
        suite, data_dir, {"publisherTrustedAlgorithms": [await jobs.trusted(suite, algorithm)]}
    )
    code, details = await _code(jobs.start_asset(suite, [trusting, raw_dataset], algorithm))
    assert code == grpc.StatusCode.PERMISSION_DENIED and raw_dataset in details


# --- the seed's preconditions and DDOs ----------------------------------------------------------------


async def test_an_unknown_did_is_not_found(suite: Suite) -> None:
    code, details = await _code(jobs.start_raw(suite, ["did:op:" + "5" * 64], "print(1)"))
    assert code == grpc.StatusCode.NOT_FOUND and "no asset" in details


async def test_a_dataset_without_compute_service_is_refused(suite: Suite, data_dir: Path) -> None:
    did = await jobs.publish_ddo(
        suite,
        {
            "metadata": {"name": "access only", "type": "dataset"},
            "services": [{"type": "access", "files": [jobs.file_entry(data_dir / "data.csv")]}],
        },
    )
    code, details = await _code(jobs.start_raw(suite, [did], "print(1)"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "no compute service" in details


async def test_a_dataset_served_by_another_provider_is_refused(suite: Suite, data_dir: Path) -> None:
    did = await jobs.publish_ddo(
        suite,
        {
            "metadata": {"name": "elsewhere", "type": "dataset"},
            "services": [
                {
                    "type": "compute",
                    "serviceEndpoint": "grpcs://provider.example.org:443",
                    "files": [jobs.file_entry(data_dir / "data.csv")],
                    "compute": {"allowRawAlgorithm": True},
                }
            ],
        },
    )
    code, details = await _code(jobs.start_raw(suite, [did], "print(1)"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "provider.example.org" in details and "not by this provider" in details


async def test_published_ddos_get_this_provider_s_endpoint(suite: Suite, raw_dataset: str) -> None:
    ddo = await jobs.public_ddo(suite, raw_dataset)
    service = ddo["services"][0]
    assert service["serviceEndpoint"] == f"grpc://127.0.0.1:{suite.provider.port}"
    assert service["timeout"] == 0 and ddo["id"] == raw_dataset
    assert "files" not in service


async def test_a_provider_without_a_chain_keeps_the_ddo_s_chain_id(suite: Suite) -> None:
    """Only a provider that checks orders on a chain compares chainId with it (test_paid_jobs)."""
    ddo = {"chainId": 137, **_dataset_ddo([PUBLIC_FILE])}
    assert (await jobs.public_ddo(suite, await jobs.publish_ddo(suite, ddo)))["chainId"] == 137


@pytest.mark.parametrize(
    ("ddo", "named"),
    [
        ({"metadata": {"name": "x", "type": "dataset"}, "nftAddress": "0x12", "services": []}, "services"),
        (
            {
                "metadata": {"name": "x", "type": "dataset"},
                "chainId": -1,
                "services": [{"type": "compute", "files": [{"url": "https://e.org/a"}]}],
            },
            "chainId",
        ),
        (
            {
                "metadata": {"name": "x", "type": "dataset"},
                "services": [
                    {"type": "compute", "datatokenAddress": "0xnope", "files": [{"url": "https://e.org/a"}]}
                ],
            },
            "datatokenAddress",
        ),
        (
            {
                "metadata": {"name": "x", "type": "dataset"},
                "services": [
                    {
                        "type": "compute",
                        "files": [{"url": "https://e.org/a"}],
                        "compute": {"publisherTrustedAlgorithms": [{"did": "did:op:" + "1" * 64}]},
                    }
                ],
            },
            "filesChecksum",
        ),
        (
            {
                "metadata": {"name": "x", "type": "dataset"},
                "services": [
                    {
                        "type": "compute",
                        "files": [{"url": "https://e.org/a", "headers": {"Bad Header": "x"}}],
                    }
                ],
            },
            "headers",
        ),
        (
            {
                "metadata": {"name": "x", "type": "dataset"},
                "services": [
                    {"type": "compute", "timeout": "forever", "files": [{"url": "https://e.org/a"}]}
                ],
            },
            "timeout",
        ),
    ],
    ids=["no services", "chain id", "datatoken", "trusted entry without checksums", "header name", "timeout"],
)
async def test_malformed_ddos_are_refused_with_the_field_named(
    suite: Suite, ddo: dict[str, Any], named: str
) -> None:
    code, details = await _code(jobs.publish_ddo(suite, ddo))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and named in details


async def test_paid_environments_need_a_chain(tmp_path: Path) -> None:
    from dataclasses import replace

    from engine_svc.config import DEFAULT_ENVIRONMENTS, EngineSettings

    paid = replace(DEFAULT_ENVIRONMENTS[0], id="paid", free=False)
    async with running_suite(
        tmp_path / "suite", engine_settings=EngineSettings(environments=(paid,))
    ) as suite:
        (tmp_path / "data.csv").write_text("a\n1\n")
        did = await jobs.publish_dataset(suite, [tmp_path / "data.csv"])
        code, details = await _code(jobs.start_raw(suite, [did], "print(1)"))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "checks no chain" in details
        quote = suite.compute.InitializeCompute(
            pb.InitializeComputeRequest(consumer_address=CONSUMER, dataset_did=did), timeout=T
        )
        assert (await _code(quote))[0] == grpc.StatusCode.FAILED_PRECONDITION


async def test_orders_for_a_free_environment_are_refused(suite: Suite, raw_dataset: str) -> None:
    request = _start(raw_dataset)
    request.orders.append(pb.AssetOrder(did=raw_dataset, tx_id="0x" + "ab" * 32))
    code, details = await _code(suite.compute.Start(request, timeout=T))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "free" in details
    free = await suite.compute.InitializeCompute(
        pb.InitializeComputeRequest(consumer_address=CONSUMER, dataset_did=raw_dataset), timeout=T
    )
    assert list(free.quotes) == []


async def test_signing_channel_reports_provider_errors_unchanged(raw_dataset: str, suite: Suite) -> None:
    channel = signed_channel(suite.provider_address)
    try:
        stub = provider_grpc.ComputeServiceStub(channel)
        code, _ = await _code(
            stub.GetJobDetails(pb.GetJobDetailsRequest(consumer_address=CONSUMER, job_id="0" * 32), timeout=T)
        )
        assert code == grpc.StatusCode.NOT_FOUND
    finally:
        await channel.close()
