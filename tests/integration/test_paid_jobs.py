"""Paid jobs end to end, on a real chain: Ocean's v4 contracts on anvil, the whole suite on real
ports, the provider checking each order with web3 before anything starts.

The consumer asks InitializeCompute for the provider fee, calls the datatoken's startOrder with it,
and sends the transaction hash with a signed Start. Each way an order can be wrong answers its
own code, and nothing starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from eth_account import Account
from google.protobuf import json_format
from web3 import Web3

from c2d.provider.v1 import request_response_pb2 as pb
from c2d_common.status import JobStatus
from engine_svc.config import DEFAULT_ENVIRONMENTS, EngineSettings
from provider_svc.infra.chain import OrderChecker, ProviderFee
from tests.chain.anvil import OceanChain, shared_ocean_chain
from tests.conftest import requires_bwrap
from tests.harness import CONSUMER, CONSUMER_KEY, OTHER_CONSUMER, PROVIDER_KEY, Suite, running_suite
from tests.integration import jobs

pytestmark = [requires_bwrap, pytest.mark.sandbox, pytest.mark.asyncio(loop_scope="module")]

T = 60
PAID = replace(
    DEFAULT_ENVIRONMENTS[0], id="paid", description="paid: each dataset needs an order", free=False
)
FREE = replace(DEFAULT_ENVIRONMENTS[0], id="free")
ALGORITHM = (
    b"import os\nopen('/data/outputs/paid.txt', 'w').write(','.join(sorted(os.listdir('/data/inputs'))))\n"
)


@dataclass
class Market:
    suite: Suite
    chain: OceanChain
    data_dir: Path


@pytest.fixture(scope="module")
def chain() -> OceanChain:
    try:
        return shared_ocean_chain()
    except LookupError as exc:
        pytest.skip(str(exc))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def market(chain: OceanChain, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Market]:
    root = tmp_path_factory.mktemp("paid")
    (root / "data.csv").write_text("a,b\n1,2\n")
    checker = OrderChecker(chain.chain_settings(provider_key=PROVIDER_KEY))
    try:
        async with running_suite(
            root / "suite", engine_settings=EngineSettings(environments=(PAID, FREE)), orders=checker
        ) as suite:
            yield Market(suite, chain, root)
    finally:
        await checker.close()


@pytest.fixture(autouse=True)
def rolled_back(chain: OceanChain) -> Iterator[None]:
    snapshot = chain.snapshot()
    yield
    chain.revert(snapshot)


async def _dataset(
    market: Market, *, timeout: int = 0, compute: dict[str, Any] | None = None
) -> tuple[str, str]:
    datatoken = market.chain.publish_datatoken()
    did = await jobs.publish_ddo(
        market.suite,
        {
            "chainId": market.chain.chain_id,
            "metadata": {"name": "paid data", "type": "dataset"},
            "services": [
                {
                    "type": "compute",
                    "datatokenAddress": datatoken,
                    "timeout": timeout,
                    "files": [jobs.file_entry(market.data_dir / "data.csv")],
                    "compute": compute or {"allowRawAlgorithm": True},
                }
            ],
        },
    )
    return did, datatoken


async def _quotes(
    market: Market,
    dids: list[str],
    algorithm_did: str = "",
    consumer: str = CONSUMER,
    environment_id: str = "paid",
) -> list[pb.OrderQuote]:
    response = await market.suite.compute.InitializeCompute(
        pb.InitializeComputeRequest(
            consumer_address=consumer,
            dataset_did=dids[0],
            additional_dataset_dids=dids[1:],
            algorithm_did=algorithm_did,
            environment_id=environment_id,
        ),
        timeout=T,
    )
    assert response.chain_id == market.chain.chain_id
    return list(response.quotes)


def _fee(quote: pb.OrderQuote) -> ProviderFee:
    return ProviderFee.from_dict(
        json_format.MessageToDict(quote.provider_fee)
        | {"providerFeeAmount": quote.provider_fee.provider_fee_amount}
    )


def _order(
    market: Market, quote: pb.OrderQuote, *, payer_key: str = CONSUMER_KEY, consumer: str = CONSUMER
) -> str:
    return market.chain.start_order(
        Account.from_key(payer_key),
        quote.datatoken_address,
        quote.service_index,
        _fee(quote),
        consumer_address=consumer,
    )


def _start(
    dids: list[str], orders: dict[str, str], request_id: str = "", algorithm_did: str = ""
) -> pb.StartRequest:
    request = pb.StartRequest(
        consumer_address=CONSUMER,
        dataset_did=dids[0],
        additional_dataset_dids=dids[1:],
        environment_id="paid",
        request_id=request_id,
        orders=[pb.AssetOrder(did=did, tx_id=tx) for did, tx in orders.items()],
    )
    if algorithm_did:
        request.algorithm_did = algorithm_did
    else:
        request.raw_algorithm.code = ALGORITHM
    return request


async def _refused(market: Market, request: pb.StartRequest) -> tuple[grpc.StatusCode, str]:
    before = await _job_count(market)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await market.suite.compute.Start(request, timeout=T)
    assert await _job_count(market) == before, "a refused Start started nothing"
    return raised.value.code(), raised.value.details() or ""


async def _job_count(market: Market) -> int:
    listed = await market.suite.compute.List(
        pb.ListRequest(consumer_address=CONSUMER, page_size=1000), timeout=T
    )
    return len(listed.jobs)


# --- the happy path ---------------------------------------------------------------------------------


async def test_order_then_start_runs_the_job_and_the_order_pays_for_that_job_only(market: Market) -> None:
    first, _ = await _dataset(market)
    second, _ = await _dataset(market)
    quotes = await _quotes(market, [first, second])
    assert [q.did for q in quotes] == [first, second]
    assert all(q.service_index == 0 and q.provider_fee.valid_until > 0 for q in quotes)
    orders = {q.did: _order(market, q) for q in quotes}

    started = await market.suite.compute.Start(
        _start([first, second], orders, request_id="paid-1"), timeout=T
    )
    job = await jobs.wait_terminal(market.suite, started.job_id)
    assert job.status == JobStatus.FINISHED, job.status_text
    _, data = await jobs.download(market.suite, job.job_id, "paid.txt", jobs.OUTPUT)
    assert set(data.decode().split(",")) >= {first, second}

    # The same Start again (a lost answer, retried) is the same job, not a second payment.
    again = await market.suite.compute.Start(_start([first, second], orders, request_id="paid-1"), timeout=T)
    assert again.job_id == started.job_id
    # Another job with the same orders: refused, they have paid already.
    code, details = await _refused(market, _start([first, second], orders, request_id="paid-2"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "already paid for another job" in details


async def test_a_reused_order_pays_for_one_more_job(market: Market) -> None:
    """Ocean's reuseOrder: an order still valid, a fresh provider fee paid for it. The reuse
    transaction pays for one more job, once; the spent original pays for nothing more."""
    did, datatoken = await _dataset(market)
    (quote,) = await _quotes(market, [did])
    order = _order(market, quote)
    first = await market.suite.compute.Start(_start([did], {did: order}, request_id="reuse-1"), timeout=T)
    assert (await jobs.wait_terminal(market.suite, first.job_id)).status == JobStatus.FINISHED

    (fresh,) = await _quotes(market, [did])
    reuse = market.chain.reuse_order(Account.from_key(CONSUMER_KEY), datatoken, order, _fee(fresh))
    second = await market.suite.compute.Start(_start([did], {did: reuse}, request_id="reuse-2"), timeout=T)
    assert second.job_id != first.job_id
    job = await jobs.wait_terminal(market.suite, second.job_id)
    assert job.status == JobStatus.FINISHED, job.status_text
    for tx, request_id in ((reuse, "reuse-3"), (order, "reuse-4")):
        code, details = await _refused(market, _start([did], {did: tx}, request_id=request_id))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "already paid for another job" in details


async def test_paid_start_without_request_id_is_still_idempotent(market: Market) -> None:
    did, _ = await _dataset(market)
    (quote,) = await _quotes(market, [did])
    orders = {did: _order(market, quote)}
    first = await market.suite.compute.Start(_start([did], orders), timeout=T)
    second = await market.suite.compute.Start(_start([did], orders), timeout=T)
    assert first.job_id == second.job_id
    await jobs.wait_terminal(market.suite, first.job_id)


async def test_an_algorithm_asset_with_a_datatoken_needs_its_own_order(market: Market) -> None:
    (market.data_dir / "algo.py").write_bytes(ALGORITHM)
    algorithm_datatoken = market.chain.publish_datatoken(name="Algorithm")
    algorithm_did = await jobs.publish_ddo(
        market.suite,
        {
            "metadata": {
                "name": "paid algorithm",
                "type": "algorithm",
                "algorithm": {"container": {"entrypoint": "python3 $ALGO"}},
            },
            "services": [
                {
                    "type": "access",
                    "datatokenAddress": algorithm_datatoken,
                    "files": [jobs.file_entry(market.data_dir / "algo.py")],
                }
            ],
        },
    )
    did, _ = await _dataset(
        market, compute={"publisherTrustedAlgorithms": [await jobs.trusted(market.suite, algorithm_did)]}
    )
    quotes = await _quotes(market, [did], algorithm_did)
    assert [q.did for q in quotes] == [did, algorithm_did]
    dataset_order = _order(market, quotes[0])
    code, details = await _refused(market, _start([did], {did: dataset_order}, algorithm_did=algorithm_did))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and f"no order for {algorithm_did}" in details
    orders = {did: dataset_order, algorithm_did: _order(market, quotes[1])}
    started = await market.suite.compute.Start(_start([did], orders, algorithm_did=algorithm_did), timeout=T)
    job = await jobs.wait_terminal(market.suite, started.job_id)
    assert job.status == JobStatus.FINISHED, job.status_text


# --- each way an order can be wrong ---------------------------------------------------------------


async def test_a_missing_order_is_refused(market: Market) -> None:
    did, _ = await _dataset(market)
    code, details = await _refused(market, _start([did], {}))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and f"no order for {did}" in details


async def test_an_unknown_transaction_is_not_found(market: Market) -> None:
    did, _ = await _dataset(market)
    code, _ = await _refused(market, _start([did], {did: "0x" + "ab" * 32}))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_a_malformed_transaction_hash_is_invalid(market: Market) -> None:
    did, _ = await _dataset(market)
    code, details = await _refused(market, _start([did], {did: "0x1234"}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "transaction hash" in details


async def test_an_order_of_another_datatoken_is_refused(market: Market) -> None:
    did, datatoken = await _dataset(market)
    other, other_datatoken = await _dataset(market)
    (other_quote,) = await _quotes(market, [other])
    code, details = await _refused(market, _start([did], {did: _order(market, other_quote)}))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "another datatoken" in details and other_datatoken in details and datatoken in details


async def test_an_order_for_another_service_of_the_same_datatoken_is_refused(market: Market) -> None:
    """The dataset's compute service is its second (index 1), both services on one datatoken: an
    order of service 0 pays for the access service, not for computing."""
    datatoken = market.chain.publish_datatoken()
    data = jobs.file_entry(market.data_dir / "data.csv")
    did = await jobs.publish_ddo(
        market.suite,
        {
            "metadata": {"name": "two services", "type": "dataset"},
            "services": [
                {"type": "access", "datatokenAddress": datatoken, "files": [data]},
                {
                    "type": "compute",
                    "datatokenAddress": datatoken,
                    "files": [data],
                    "compute": {"allowRawAlgorithm": True},
                },
            ],
        },
    )
    (quote,) = await _quotes(market, [did])
    assert quote.service_index == 1
    # The contract checks the fee's signature only, so it takes an order of service 0 with the quote.
    tx = market.chain.start_order(
        Account.from_key(CONSUMER_KEY), datatoken, 0, _fee(quote), consumer_address=CONSUMER
    )
    code, details = await _refused(market, _start([did], {did: tx}))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "is for service 0" in details and "not service 1" in details
    # Service 1 ordered with the same quote runs.
    right = _order(market, quote)
    started = await market.suite.compute.Start(_start([did], {did: right}), timeout=T)
    assert (await jobs.wait_terminal(market.suite, started.job_id)).status == JobStatus.FINISHED


async def test_an_order_for_another_consumer_is_refused(market: Market) -> None:
    did, _ = await _dataset(market)
    (quote,) = await _quotes(market, [did], consumer=OTHER_CONSUMER)
    tx = _order(market, quote, consumer=OTHER_CONSUMER)
    code, details = await _refused(market, _start([did], {did: tx}))
    # docs/orders.md: OrderForAnotherConsumer is PERMISSION_DENIED, whoever paid.
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert f"placed for consumer {Web3.to_checksum_address(OTHER_CONSUMER)}" in details


async def test_an_expired_order_is_refused(market: Market) -> None:
    did, _ = await _dataset(market, timeout=1)
    (quote,) = await _quotes(market, [did])
    tx = _order(market, quote)
    # The provider judges expiry by its own clock, as it must: wait the service's second out.
    await asyncio.sleep(2.5)
    code, details = await _refused(market, _start([did], {did: tx}))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "expire" in details


async def test_an_order_for_a_dataset_the_job_does_not_use_is_refused(market: Market) -> None:
    did, _ = await _dataset(market)
    (quote,) = await _quotes(market, [did])
    tx = _order(market, quote)
    code, details = await _refused(market, _start([did], {did: tx, "did:op:" + "7" * 64: tx}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "does not use" in details


async def test_a_dataset_without_datatoken_runs_in_free_environments_only(market: Market) -> None:
    did = await jobs.publish_dataset(market.suite, [market.data_dir / "data.csv"])
    code, details = await _refused(market, _start([did], {}))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "free environments only" in details
    free = _start([did], {})
    free.environment_id = "free"
    started = await market.suite.compute.Start(free, timeout=T)
    assert (await jobs.wait_terminal(market.suite, started.job_id)).status == JobStatus.FINISHED


async def test_a_priced_dataset_needs_its_order_in_a_free_environment_too(market: Market) -> None:
    """A free environment waives the provider's fee, not the dataset's price: otherwise any provider
    offering a free environment beside a paid one would let every consumer skip paying."""
    did, datatoken = await _dataset(market)
    unpaid = _start([did], {})
    unpaid.environment_id = "free"
    code, details = await _refused(market, unpaid)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and f"no order for {did}" in details
    assert "free environment waives only the provider's fee" in details

    (quote,) = await _quotes(market, [did], environment_id="free")
    assert quote.did == did and quote.datatoken_address.lower() == datatoken.lower()
    assert quote.provider_fee.provider_fee_amount == "0", "a free environment charges no fee"
    # The free environment's quote is bound to it: it cannot pay for the paid environment.
    code, details = await _refused(market, _start([did], {did: _order(market, quote)}))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "for environment 'free'" in details

    (quote,) = await _quotes(market, [did], environment_id="free")
    paid = _start([did], {did: _order(market, quote)})
    paid.environment_id = "free"
    started = await market.suite.compute.Start(paid, timeout=T)
    assert (await jobs.wait_terminal(market.suite, started.job_id)).status == JobStatus.FINISHED
    # And that order pays for that job only, in the free environment as in a paid one.
    paid.request_id = "another-job"
    code, details = await _refused(market, paid)
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "already paid for another job" in details


async def test_a_free_environment_with_unpriced_assets_takes_no_orders(market: Market) -> None:
    did = await jobs.publish_dataset(market.suite, [market.data_dir / "data.csv"])
    assert await _quotes(market, [did], environment_id="free") == []
    priced, _ = await _dataset(market)
    (quote,) = await _quotes(market, [priced], environment_id="free")
    request = _start([did], {did: _order(market, quote)})
    request.environment_id = "free"
    code, details = await _refused(market, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "send no orders" in details


# --- the DDO's chain ----------------------------------------------------------------------------------


@pytest.mark.parametrize("chain_id", [1, 137, 31338, 2**53])
async def test_a_ddo_for_another_chain_is_refused_at_publish(market: Market, chain_id: int) -> None:
    datatoken = market.chain.publish_datatoken()
    ddo = {
        "chainId": chain_id,
        "metadata": {"name": "elsewhere", "type": "dataset"},
        "services": [
            {
                "type": "compute",
                "datatokenAddress": datatoken,
                "files": [jobs.file_entry(market.data_dir / "data.csv")],
                "compute": {"allowRawAlgorithm": True},
            }
        ],
    }
    before = set((market.suite.root / "assets").glob("*.json"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await jobs.publish_ddo(market.suite, ddo)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = raised.value.details() or ""
    assert f"chain {chain_id}" in details and "C2D_CHAIN_ID" in details
    assert f"chain {market.chain.chain_id}" in details
    assert set((market.suite.root / "assets").glob("*.json")) == before


async def test_a_ddo_without_chain_gets_the_provider_s(market: Market) -> None:
    did = await jobs.publish_dataset(market.suite, [market.data_dir / "data.csv"])
    assert (await jobs.public_ddo(market.suite, did))["chainId"] == market.chain.chain_id
    same, _ = await _dataset(market)  # names chainId 31337 itself
    assert (await jobs.public_ddo(market.suite, same))["chainId"] == market.chain.chain_id
