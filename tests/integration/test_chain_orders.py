"""OrderChecker against a real node (anvil) running Ocean's own v4 contracts: every order here is a
real ERC20Template.startOrder (or reuseOrder) transaction paying a real datatoken."""

# ruff: noqa: F811 (the chain fixtures are imported, and pytest passes them by name)

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path
from typing import Any

import grpc
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from c2d_common.env import ConfigError
from c2d_common.errors import InvalidArgument
from provider_svc.infra.chain import (
    ONE_DATATOKEN,
    ZERO_ADDRESS,
    ChainSettings,
    ChainUnavailable,
    MalformedOrderTx,
    NotAnOrder,
    NotEnoughConfirmations,
    OrderAmountTooLow,
    OrderChecker,
    OrderExpired,
    OrderForAnotherConsumer,
    OrderForAnotherDatatoken,
    OrderForAnotherService,
    OrderNotFound,
    OrderNotMined,
    OrderRejected,
    OrderReverted,
    ProviderFee,
    ProviderFeeExpired,
    ProviderFeeMismatch,
    ProviderFeeNotIssued,
    VerifiedOrder,
    fee_message_hash,
    fee_signer,
    quote_provider_fee,
)
from tests.chain.anvil import OceanChain
from tests.chain.fixtures import ocean_chain, ocean_chain_session, order_checker  # noqa: F401

ENVIRONMENT = "local-small"
TIMEOUT = 3600  # the compute service's timeout: an order counts for an hour


def quote(
    chain: OceanChain,
    datatoken: str,
    *,
    consumer: str | None = None,
    service_index: int = 0,
    environment_id: str = ENVIRONMENT,
    **kwargs: Any,
) -> ProviderFee:
    return quote_provider_fee(
        chain.chain_settings(**kwargs.pop("settings", {})),
        datatoken=datatoken,
        service_index=service_index,
        environment_id=environment_id,
        consumer=consumer or chain.consumer.address,
        **kwargs,
    )


async def verify(
    checker: OrderChecker,
    chain: OceanChain,
    tx_hash: str,
    datatoken: str,
    *,
    service_index: int = 0,
    consumer: str | None = None,
    timeout: int = TIMEOUT,
    environment_id: str = ENVIRONMENT,
    now: float | None = None,
) -> VerifiedOrder:
    return await checker.verify_order(
        tx_hash=tx_hash,
        datatoken=datatoken,
        service_index=service_index,
        consumer=consumer or chain.consumer.address,
        service_timeout_seconds=timeout,
        environment_id=environment_id,
        now=now,
    )


def ordered(chain: OceanChain, *, service_index: int = 0) -> tuple[str, str]:
    """A datatoken, and the consumer's order of its service `service_index`."""
    datatoken = chain.publish_datatoken()
    fee = quote(chain, datatoken, service_index=service_index)
    return datatoken, chain.start_order(chain.consumer, datatoken, service_index, fee)


# --- the order that pays ------------------------------------------------------------------------------


async def test_an_order_with_this_providers_fee_pays_for_the_job(
    ocean_chain: OceanChain, order_checker: OrderChecker
) -> None:
    datatoken = ocean_chain.publish_datatoken()
    fee = quote(ocean_chain, datatoken, service_index=2)
    tx_hash = ocean_chain.start_order(ocean_chain.consumer, datatoken, 2, fee)
    # The datatoken really moved: the publisher got it, less Ocean's community fee.
    assert ocean_chain.balance_of(datatoken, ocean_chain.consumer.address) == 0
    assert 0 < ocean_chain.balance_of(datatoken, ocean_chain.publisher.address) <= ONE_DATATOKEN

    order = await verify(
        order_checker, ocean_chain, tx_hash.upper().replace("0X", "0x"), datatoken, service_index=2
    )

    ordered_at = ocean_chain.block_timestamp_of(tx_hash)
    assert order == VerifiedOrder(
        tx_hash=tx_hash.lower(),
        datatoken=datatoken,
        consumer=ocean_chain.consumer.address,
        payer=ocean_chain.consumer.address,
        service_index=2,
        block_number=ocean_chain.w3.eth.get_transaction_receipt(tx_hash)["blockNumber"],  # type: ignore[arg-type]
        block_timestamp=ordered_at,
        expires_at=ordered_at + TIMEOUT,
        order_tx_hash=tx_hash.lower(),
        ordered_at=ordered_at,
        environment_id=ENVIRONMENT,
        provider_fee_token=fee.provider_fee_token,
        provider_fee_amount=0,
        provider_fee_valid_until=fee.valid_until,
    )
    assert not order.reused


async def test_someone_else_may_pay_for_the_consumer(
    ocean_chain: OceanChain, order_checker: OrderChecker
) -> None:
    datatoken = ocean_chain.publish_datatoken()
    fee = quote(ocean_chain, datatoken)
    tx_hash = ocean_chain.start_order(
        ocean_chain.stranger, datatoken, 0, fee, consumer_address=ocean_chain.consumer.address
    )

    order = await verify(order_checker, ocean_chain, tx_hash, datatoken)

    assert order.consumer == ocean_chain.consumer.address
    assert order.payer == ocean_chain.stranger.address
    # ...but paying gives the payer no right to run: the order names the consumer.
    with pytest.raises(OrderForAnotherConsumer):
        await verify(order_checker, ocean_chain, tx_hash, datatoken, consumer=ocean_chain.stranger.address)


async def test_a_provider_fee_in_ocean_is_paid_to_the_provider(ocean_chain: OceanChain) -> None:
    amount = 5 * 10**18
    settings = ocean_chain.chain_settings(
        provider_fee_token=ocean_chain.ocean.address, provider_fee_amount=amount
    )
    datatoken = ocean_chain.publish_datatoken()
    before = int(ocean_chain.ocean.functions.balanceOf(ocean_chain.provider.address).call())
    async with OrderChecker(settings) as checker:
        fee = checker.quote_provider_fee(
            datatoken=datatoken,
            service_index=0,
            environment_id=ENVIRONMENT,
            consumer=ocean_chain.consumer.address,
        )
        tx_hash = ocean_chain.start_order(ocean_chain.consumer, datatoken, 0, fee)

        order = await verify(checker, ocean_chain, tx_hash, datatoken)

    assert (order.provider_fee_token, order.provider_fee_amount) == (ocean_chain.ocean.address, amount)
    assert int(ocean_chain.ocean.functions.balanceOf(ocean_chain.provider.address).call()) == before + amount


async def test_a_zero_fee_quote_of_a_fee_charging_provider_is_an_order_that_pays_no_fee(
    ocean_chain: OceanChain,
) -> None:
    """A free environment's quote (amount 0) from a provider whose fee is 5 OCEAN: the datatoken
    order goes through and nothing is paid to the provider; it is still bound to its environment."""
    settings = ocean_chain.chain_settings(
        provider_fee_token=ocean_chain.ocean.address, provider_fee_amount=5 * 10**18
    )
    datatoken = ocean_chain.publish_datatoken()
    before = int(ocean_chain.ocean.functions.balanceOf(ocean_chain.provider.address).call())
    async with OrderChecker(settings) as checker:
        fee = checker.quote_provider_fee(
            datatoken=datatoken,
            service_index=0,
            environment_id=ENVIRONMENT,
            consumer=ocean_chain.consumer.address,
            amount=0,
        )
        assert fee.provider_fee_amount == 0
        tx_hash = ocean_chain.start_order(ocean_chain.consumer, datatoken, 0, fee)
        order = await verify(checker, ocean_chain, tx_hash, datatoken)
        assert order.provider_fee_amount == 0
        with pytest.raises(ProviderFeeMismatch):
            await checker.verify_order(
                tx_hash=tx_hash,
                datatoken=datatoken,
                service_index=0,
                consumer=ocean_chain.consumer.address,
                service_timeout_seconds=0,
                environment_id="another-environment",
            )
        with pytest.raises(InvalidArgument):
            checker.quote_provider_fee(
                datatoken=datatoken,
                service_index=0,
                environment_id=ENVIRONMENT,
                consumer=ocean_chain.consumer.address,
                amount=-1,
            )
    assert int(ocean_chain.ocean.functions.balanceOf(ocean_chain.provider.address).call()) == before


def test_a_quote_round_trips_through_json(ocean_chain: OceanChain) -> None:
    fee = quote(ocean_chain, ocean_chain.stranger.address)
    as_json = fee.to_dict()
    assert set(as_json) == {
        "providerFeeAddress",
        "providerFeeToken",
        "providerFeeAmount",
        "v",
        "r",
        "s",
        "validUntil",
        "providerData",
    }
    assert ProviderFee.from_dict(as_json) == fee


# --- transactions that are no (usable) order ----------------------------------------------------------


@pytest.mark.parametrize(
    "tx_hash",
    [
        "",
        "0x",
        "0x1234",
        "ab" * 32,
        "0x" + "zz" * 32,
        "0x" + "ab" * 33,
        "0x" + "ab" * 32 + "\n",
        "0x" + "ab" * 31 + " a",
    ],
)
async def test_a_malformed_transaction_hash_is_an_invalid_argument(
    ocean_chain: OceanChain, order_checker: OrderChecker, tx_hash: str
) -> None:
    with pytest.raises(MalformedOrderTx) as raised:
        await verify(order_checker, ocean_chain, tx_hash, ocean_chain.stranger.address)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_unknown_transaction_is_not_found(
    ocean_chain: OceanChain, order_checker: OrderChecker
) -> None:
    datatoken = ocean_chain.publish_datatoken()
    with pytest.raises(OrderNotFound) as raised:
        await verify(order_checker, ocean_chain, "0x" + "5e" * 32, datatoken)
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert "chain 31337" in str(raised.value)


async def test_an_order_not_mined_yet_counts_once_mined(
    ocean_chain: OceanChain, order_checker: OrderChecker
) -> None:
    datatoken = ocean_chain.publish_datatoken()
    fee = quote(ocean_chain, datatoken)
    ocean_chain.mint_datatokens(datatoken, ocean_chain.consumer.address)
    with ocean_chain.no_automine():
        tx_hash = ocean_chain.start_order(ocean_chain.consumer, datatoken, 0, fee, fund=False, wait=False)
        with pytest.raises(OrderNotMined) as raised:
            await verify(order_checker, ocean_chain, tx_hash, datatoken)
        assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
        ocean_chain.mine()

    assert (await verify(order_checker, ocean_chain, tx_hash, datatoken)).tx_hash == tx_hash


async def test_a_reverted_order_pays_for_nothing(
    ocean_chain: OceanChain, order_checker: OrderChecker
) -> None:
    datatoken = ocean_chain.publish_datatoken()
    # No datatoken in the consumer's wallet: startOrder reverts, but the transaction is mined.
    tx_hash = ocean_chain.start_order(
        ocean_chain.consumer, datatoken, 0, quote(ocean_chain, datatoken), fund=False, expect_revert=True
    )
    with pytest.raises(OrderReverted, match="reverted"):
        await verify(order_checker, ocean_chain, tx_hash, datatoken)


async def test_an_order_needs_the_confirmations_the_provider_requires(ocean_chain: OceanChain) -> None:
    datatoken, tx_hash = ordered(ocean_chain)
    async with OrderChecker(ocean_chain.chain_settings(min_confirmations=3)) as checker:
        with pytest.raises(
            NotEnoughConfirmations, match=r"1 of the 3 confirmations.*after 2 more blocks"
        ) as raised:
            await verify(checker, ocean_chain, tx_hash, datatoken)
        assert raised.value.missing == 2

        ocean_chain.mine()
        with pytest.raises(NotEnoughConfirmations, match=r"after 1 more block$"):
            await verify(checker, ocean_chain, tx_hash, datatoken)

        ocean_chain.mine()
        assert (await verify(checker, ocean_chain, tx_hash, datatoken)).tx_hash == tx_hash


async def test_a_transaction_that_is_no_order_is_refused(
    ocean_chain: OceanChain, order_checker: OrderChecker
) -> None:
    datatoken = ocean_chain.publish_datatoken()
    # A transaction of the datatoken that is not an order: the publisher minting.
    ocean_chain.mint_datatokens(datatoken, ocean_chain.consumer.address)
    mint_tx = ocean_chain.w3.eth.get_block("latest")["transactions"][0]
    with pytest.raises(NotAnOrder, match="startOrder"):
        await verify(order_checker, ocean_chain, "0x" + bytes(mint_tx).hex(), datatoken)  # type: ignore[arg-type]


async def test_an_order_of_another_datatoken_is_refused(
    ocean_chain: OceanChain, order_checker: OrderChecker
) -> None:
    datatoken, tx_hash = ordered(ocean_chain)
    other = ocean_chain.publish_datatoken(name="Other dataset")

    with pytest.raises(OrderForAnotherDatatoken, match=f"another datatoken \\({datatoken}\\)") as raised:
        await verify(order_checker, ocean_chain, tx_hash, other)
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION


async def test_an_order_of_another_service_is_refused(
    ocean_chain: OceanChain, order_checker: OrderChecker
) -> None:
    datatoken, tx_hash = ordered(ocean_chain, service_index=1)

    with pytest.raises(OrderForAnotherService, match=r"is for service 1 .* not service 0"):
        await verify(order_checker, ocean_chain, tx_hash, datatoken, service_index=0)


async def test_an_order_for_another_consumer_is_refused(
    ocean_chain: OceanChain, order_checker: OrderChecker
) -> None:
    datatoken, tx_hash = ordered(ocean_chain)

    with pytest.raises(OrderForAnotherConsumer) as raised:
        await verify(order_checker, ocean_chain, tx_hash, datatoken, consumer=ocean_chain.stranger.address)
    assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert ocean_chain.consumer.address in str(raised.value)


# --- the provider fee ---------------------------------------------------------------------------------


async def test_a_provider_fee_signed_by_another_key_is_refused(
    ocean_chain: OceanChain, order_checker: OrderChecker
) -> None:
    datatoken = ocean_chain.publish_datatoken()
    # A fee another provider quoted: startOrder accepts it (its signer is its providerFeeAddress).
    foreign = quote(ocean_chain, datatoken, settings={"provider_key": ocean_chain.stranger.key.hex()})
    tx_hash = ocean_chain.start_order(ocean_chain.consumer, datatoken, 0, foreign)

    with pytest.raises(
        ProviderFeeNotIssued, match=f"not issued by this provider \\({ocean_chain.provider.address}\\)"
    ):
        await verify(order_checker, ocean_chain, tx_hash, datatoken)


@pytest.mark.parametrize("quoted_for", ["environment", "consumer", "datatoken", "service"])
async def test_a_provider_fee_quoted_for_something_else_is_refused(
    ocean_chain: OceanChain, order_checker: OrderChecker, quoted_for: str
) -> None:
    datatoken = ocean_chain.publish_datatoken()
    fee = {
        "environment": lambda: quote(ocean_chain, datatoken, environment_id="gpu-large"),
        "consumer": lambda: quote(ocean_chain, datatoken, consumer=ocean_chain.stranger.address),
        "datatoken": lambda: quote(ocean_chain, ocean_chain.publish_datatoken(name="Elsewhere")),
        "service": lambda: quote(ocean_chain, datatoken, service_index=1),
    }[quoted_for]()
    tx_hash = ocean_chain.start_order(ocean_chain.consumer, datatoken, 0, fee)

    with pytest.raises(ProviderFeeMismatch, match=f"quoted for {quoted_for}"):
        await verify(order_checker, ocean_chain, tx_hash, datatoken)


async def test_a_provider_fee_expired_when_the_order_was_mined_is_refused(
    ocean_chain: OceanChain, order_checker: OrderChecker
) -> None:
    datatoken = ocean_chain.publish_datatoken()
    fee = quote(ocean_chain, datatoken, valid_seconds=60, now=ocean_chain.latest_timestamp())
    ocean_chain.advance_time(120)
    tx_hash = ocean_chain.start_order(ocean_chain.consumer, datatoken, 0, fee)
    mined_at = ocean_chain.block_timestamp_of(tx_hash)
    assert mined_at > fee.valid_until

    with pytest.raises(ProviderFeeExpired, match="ask for a new fee and order again"):
        await verify(order_checker, ocean_chain, tx_hash, datatoken, now=mined_at)


async def test_a_provider_fee_expired_since_the_order_is_refused(
    ocean_chain: OceanChain, order_checker: OrderChecker
) -> None:
    datatoken = ocean_chain.publish_datatoken()
    fee = quote(ocean_chain, datatoken, valid_seconds=600)
    tx_hash = ocean_chain.start_order(ocean_chain.consumer, datatoken, 0, fee)

    assert await verify(order_checker, ocean_chain, tx_hash, datatoken, now=fee.valid_until)
    with pytest.raises(ProviderFeeExpired, match="reuseOrder"):
        await verify(order_checker, ocean_chain, tx_hash, datatoken, now=fee.valid_until + 1)


# --- expiry and reuse ---------------------------------------------------------------------------------


async def test_an_order_expires_after_the_service_timeout(
    ocean_chain: OceanChain, order_checker: OrderChecker
) -> None:
    datatoken, tx_hash = ordered(ocean_chain)
    ordered_at = ocean_chain.block_timestamp_of(tx_hash)

    order = await verify(order_checker, ocean_chain, tx_hash, datatoken, timeout=60, now=ordered_at + 60)
    assert order.expires_at == ordered_at + 60
    with pytest.raises(OrderExpired, match=r"expired at .* 60 s after ordering; order again"):
        await verify(order_checker, ocean_chain, tx_hash, datatoken, timeout=60, now=ordered_at + 61)


async def test_an_order_of_a_service_without_timeout_never_expires(
    ocean_chain: OceanChain, order_checker: OrderChecker
) -> None:
    datatoken = ocean_chain.publish_datatoken()
    ten_years = 10 * 365 * 86400
    tx_hash = ocean_chain.start_order(
        ocean_chain.consumer, datatoken, 0, quote(ocean_chain, datatoken, valid_seconds=ten_years + 60)
    )
    later = ocean_chain.block_timestamp_of(tx_hash) + ten_years

    order = await verify(order_checker, ocean_chain, tx_hash, datatoken, timeout=0, now=later)
    assert order.expires_at is None


async def test_a_reused_order_pays_again_with_a_fresh_provider_fee(
    ocean_chain: OceanChain, order_checker: OrderChecker
) -> None:
    datatoken = ocean_chain.publish_datatoken()
    first_fee = quote(ocean_chain, datatoken, valid_seconds=600)
    order_tx = ocean_chain.start_order(ocean_chain.consumer, datatoken, 0, first_fee)
    ordered_at = ocean_chain.block_timestamp_of(order_tx)
    later = ocean_chain.advance_time(1200)  # the first fee has expired, the order (an hour) has not
    with pytest.raises(ProviderFeeExpired):
        await verify(order_checker, ocean_chain, order_tx, datatoken, now=later)

    reuse_tx = ocean_chain.reuse_order(
        ocean_chain.consumer, datatoken, order_tx, quote(ocean_chain, datatoken, now=later)
    )
    order = await verify(order_checker, ocean_chain, reuse_tx, datatoken, now=later)

    assert order.reused
    assert (order.tx_hash, order.order_tx_hash) == (reuse_tx, order_tx)
    assert order.ordered_at == ordered_at
    assert order.block_timestamp == ocean_chain.block_timestamp_of(reuse_tx)
    # Reusing renews the provider fee, not the order: it still expires an hour after it was placed.
    assert order.expires_at == ordered_at + TIMEOUT
    with pytest.raises(OrderExpired):
        await verify(order_checker, ocean_chain, reuse_tx, datatoken, now=ordered_at + TIMEOUT + 1)


async def test_reusing_someone_elses_order_gives_no_right_to_run(
    ocean_chain: OceanChain, order_checker: OrderChecker
) -> None:
    datatoken, order_tx = ordered(ocean_chain)
    stranger = ocean_chain.stranger.address
    reuse_tx = ocean_chain.reuse_order(
        ocean_chain.stranger, datatoken, order_tx, quote(ocean_chain, datatoken, consumer=stranger)
    )
    with pytest.raises(OrderForAnotherConsumer):
        await verify(order_checker, ocean_chain, reuse_tx, datatoken, consumer=stranger)


async def test_reusing_something_that_is_no_order_is_refused(
    ocean_chain: OceanChain, order_checker: OrderChecker
) -> None:
    datatoken = ocean_chain.publish_datatoken()
    unknown = "0x" + "77" * 32
    reuse_tx = ocean_chain.reuse_order(
        ocean_chain.consumer, datatoken, unknown, quote(ocean_chain, datatoken)
    )
    with pytest.raises(OrderNotFound, match=f"reuses, {unknown} is not on chain"):
        await verify(order_checker, ocean_chain, reuse_tx, datatoken)

    _, other_order = ordered(ocean_chain)  # an order, of another datatoken
    reuse_tx = ocean_chain.reuse_order(
        ocean_chain.consumer, datatoken, other_order, quote(ocean_chain, datatoken)
    )
    with pytest.raises(NotAnOrder, match=f"reuses {other_order}, which is no order of this dataset"):
        await verify(order_checker, ocean_chain, reuse_tx, datatoken)


# --- events that no Ocean datatoken emitted ------------------------------------------------------------


def signed_by(fee: ProviderFee, key: str, **changes: Any) -> ProviderFee:
    """`fee` with `changes`, signed with `key`."""
    fee = dataclasses.replace(fee, **changes)
    signature = Account.sign_message(
        encode_defunct(
            primitive=fee_message_hash(
                fee.provider_data,
                fee.provider_fee_address,
                fee.provider_fee_token,
                fee.provider_fee_amount,
                fee.valid_until,
            )
        ),
        key,
    )
    return dataclasses.replace(
        fee, v=signature.v, r=signature.r.to_bytes(32, "big"), s=signature.s.to_bytes(32, "big")
    )


def order_events(
    chain: OceanChain, fee: ProviderFee, *, amount: int = ONE_DATATOKEN
) -> list[tuple[str, dict[str, Any]]]:
    """What startOrder(consumer, 0, fee) emits, as a contract that checks nothing can emit it."""
    return [
        (
            "OrderStarted",
            {
                "consumer": chain.consumer.address,
                "payer": chain.consumer.address,
                "amount": amount,
                "serviceIndex": 0,
                "timestamp": chain.latest_timestamp(),
                "publishMarketAddress": chain.consumer.address,
                "blockNumber": chain.w3.eth.block_number,
            },
        ),
        (
            "ProviderFee",
            {
                "providerFeeAddress": fee.provider_fee_address,
                "providerFeeToken": fee.provider_fee_token,
                "providerFeeAmount": fee.provider_fee_amount,
                "providerData": fee.provider_data,
                "v": fee.v,
                "r": fee.r,
                "s": fee.s,
                "validUntil": fee.valid_until,
            },
        ),
    ]


async def test_order_events_forged_by_another_contract_do_not_count(
    ocean_chain: OceanChain, order_checker: OrderChecker
) -> None:
    datatoken = ocean_chain.publish_datatoken()
    # A genuine quote for this datatoken, replayed in events of a contract that took no datatoken.
    genuine_fee = quote(ocean_chain, datatoken)
    forger = ocean_chain.deploy_event_emitter()
    tx_hash = ocean_chain.emit_events(ocean_chain.consumer, forger, order_events(ocean_chain, genuine_fee))

    with pytest.raises(OrderForAnotherDatatoken, match=forger):
        await verify(order_checker, ocean_chain, tx_hash, datatoken)


@pytest.mark.parametrize(
    "case", ["fits", "half a datatoken", "signed by another key", "issued to another address"]
)
async def test_a_datatoken_that_is_not_oceans_template_is_checked_as_closely(
    ocean_chain: OceanChain, order_checker: OrderChecker, case: str
) -> None:
    # The checks Ocean's template makes itself (one datatoken a order, a fee signed by its
    # providerFeeAddress) are made again, since a DDO may name any contract as its datatoken.
    datatoken = ocean_chain.deploy_event_emitter()
    fee = quote(ocean_chain, datatoken)
    amount = ONE_DATATOKEN
    if case == "half a datatoken":
        amount = ONE_DATATOKEN // 2
    elif case == "signed by another key":
        fee = signed_by(fee, ocean_chain.stranger.key.hex())
    elif case == "issued to another address":
        fee = signed_by(
            fee, ocean_chain.provider.key.hex(), provider_fee_address=ocean_chain.stranger.address
        )
    tx_hash = ocean_chain.emit_events(
        ocean_chain.consumer, datatoken, order_events(ocean_chain, fee, amount=amount)
    )

    if case == "fits":
        assert (await verify(order_checker, ocean_chain, tx_hash, datatoken)).tx_hash == tx_hash
    elif case == "half a datatoken":
        with pytest.raises(OrderAmountTooLow, match=r"paid 0\.5 datatokens; an order must pay 1"):
            await verify(order_checker, ocean_chain, tx_hash, datatoken)
    else:
        with pytest.raises(ProviderFeeNotIssued):
            await verify(order_checker, ocean_chain, tx_hash, datatoken)


def test_a_quote_is_signed_by_the_providers_key(ocean_chain: OceanChain) -> None:
    fee = quote(ocean_chain, ocean_chain.stranger.address)
    assert fee_signer(fee) == ocean_chain.provider.address
    assert (
        fee_signer(dataclasses.replace(fee, valid_until=fee.valid_until + 1)) != ocean_chain.provider.address
    )
    assert fee_signer(dataclasses.replace(fee, v=99)) is None


# --- the node -----------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_chain_is_unavailable_and_says_no_more(ocean_chain: OceanChain) -> None:
    port = closed_port()
    settings = ocean_chain.chain_settings(rpc_url=f"http://127.0.0.1:{port}")
    async with OrderChecker(settings) as checker:
        with pytest.raises(ChainUnavailable) as raised:
            await verify(checker, ocean_chain, "0x" + "ab" * 32, ocean_chain.stranger.address)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert not isinstance(raised.value, OrderRejected)
    assert str(port) not in str(raised.value)


async def test_a_node_on_another_chain_checks_no_order(ocean_chain: OceanChain) -> None:
    datatoken, tx_hash = ordered(ocean_chain)
    async with OrderChecker(ocean_chain.chain_settings(chain_id=1)) as checker:
        with pytest.raises(ChainUnavailable, match="misconfigured"):
            await verify(checker, ocean_chain, tx_hash, datatoken)


# --- settings -----------------------------------------------------------------------------------------

CHAIN_VARIABLES = [
    "C2D_CHAIN_RPC_URL",
    "C2D_CHAIN_ID",
    "C2D_PROVIDER_KEY",
    "C2D_PROVIDER_KEY_FILE",
    "C2D_MIN_CONFIRMATIONS",
    "C2D_PROVIDER_FEE_TOKEN",
    "C2D_PROVIDER_FEE_AMOUNT",
    "C2D_PROVIDER_FEE_VALIDITY_SECONDS",
]
KEY = "0x" + "4c" * 32


@pytest.fixture
def chain_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in CHAIN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_without_an_rpc_url_the_provider_checks_no_chain(chain_env: pytest.MonkeyPatch) -> None:
    chain_env.setenv("C2D_PROVIDER_KEY", KEY)
    assert ChainSettings.from_env() is None


def test_chain_settings_from_the_environment(chain_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    chain_env.setenv("C2D_CHAIN_RPC_URL", "http://127.0.0.1:8545")
    chain_env.setenv("C2D_CHAIN_ID", "31337")
    (tmp_path / "key").write_text(KEY + "\n")
    chain_env.setenv("C2D_PROVIDER_KEY_FILE", str(tmp_path / "key"))

    settings = ChainSettings.from_env()

    assert settings == ChainSettings(rpc_url="http://127.0.0.1:8545", chain_id=31337, provider_key=KEY)
    assert (settings.min_confirmations, settings.provider_fee_token, settings.provider_fee_amount) == (
        1,
        ZERO_ADDRESS,
        0,
    )
    assert settings.fee_validity_seconds == 3600
    assert KEY.removeprefix("0x") not in repr(settings)

    token = "0x" + "ab" * 20
    chain_env.setenv("C2D_MIN_CONFIRMATIONS", "12")
    chain_env.setenv("C2D_PROVIDER_FEE_TOKEN", token)
    chain_env.setenv("C2D_PROVIDER_FEE_AMOUNT", str(10**30))
    chain_env.setenv("C2D_PROVIDER_FEE_VALIDITY_SECONDS", "600")
    settings = ChainSettings.from_env(provider_key="0x" + "5d" * 32)
    assert settings is not None
    assert (settings.min_confirmations, settings.provider_fee_token, settings.provider_fee_amount) == (
        12,
        token,
        10**30,
    )
    assert settings.fee_validity_seconds == 600
    assert settings.provider_key == "0x" + "5d" * 32


@pytest.mark.parametrize(
    ("variables", "complaint"),
    [
        ({"C2D_PROVIDER_KEY": KEY}, "C2D_CHAIN_ID must be set"),
        ({"C2D_CHAIN_ID": "31337"}, "needs its signer key"),
        ({"C2D_CHAIN_ID": "31337", "C2D_PROVIDER_KEY_FILE": "/nonexistent/key"}, "cannot be read"),
        ({"C2D_CHAIN_ID": "31337", "C2D_PROVIDER_KEY": "0x1234"}, "not a hex private key"),
        ({"C2D_CHAIN_ID": "x", "C2D_PROVIDER_KEY": KEY}, "C2D_CHAIN_ID='x' is not an integer"),
        ({"C2D_CHAIN_ID": "1", "C2D_PROVIDER_KEY": KEY, "C2D_MIN_CONFIRMATIONS": "0"}, "at least 1"),
        ({"C2D_CHAIN_ID": "1", "C2D_PROVIDER_KEY": KEY, "C2D_PROVIDER_FEE_TOKEN": "ocean"}, "not an address"),
        ({"C2D_CHAIN_ID": "1", "C2D_PROVIDER_KEY": KEY, "C2D_PROVIDER_FEE_AMOUNT": "-1"}, "negative"),
        (
            {"C2D_CHAIN_ID": "1", "C2D_PROVIDER_KEY": KEY, "C2D_PROVIDER_FEE_VALIDITY_SECONDS": "0"},
            "positive",
        ),
        ({"C2D_CHAIN_ID": "1", "C2D_PROVIDER_KEY": KEY, "C2D_CHAIN_RPC_URL": "ws://node"}, "not an http"),
        ({"C2D_CHAIN_ID": "1", "C2D_PROVIDER_KEY": KEY, "C2D_CHAIN_RPC_URL": "http://node:x"}, "not an http"),
    ],
)
def test_chain_settings_that_cannot_work_stop_the_start(
    chain_env: pytest.MonkeyPatch, variables: dict[str, str], complaint: str
) -> None:
    chain_env.setenv("C2D_CHAIN_RPC_URL", "http://127.0.0.1:8545")
    for name, value in variables.items():
        chain_env.setenv(name, value)
    with pytest.raises(ConfigError, match=complaint):
        ChainSettings.from_env()
