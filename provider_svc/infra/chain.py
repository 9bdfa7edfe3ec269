"""The chain side of the provider's access control: provider fee quotes and datatoken order checks.

A paid job runs only on an order the consumer placed on chain with Ocean's `ERC20Template.startOrder`
(or `reuseOrder`), paying one datatoken of each dataset's service and the provider fee this
provider quoted and signed. `OrderChecker.verify_order` reads the order's transaction back from the
node and accepts it only when everything in it fits the request; each way it can fail is its own
exception, with a message that tells the consumer what to fix. docs/orders.md has the whole flow.

We never trust what the consumer says about an order: every fact comes from the transaction's
receipt, its block, and the events the datatoken contract itself emitted.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import event_abi_to_log_topic
from web3 import AsyncHTTPProvider, AsyncWeb3, Web3
from web3.exceptions import (
    BadResponseFormat,
    ProviderConnectionError,
    TooManyRequests,
    TransactionNotFound,
    Web3RPCError,
)

from c2d_common.env import ConfigError, env_int, env_str
from c2d_common.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from c2d_common.ocean_contracts import ONE_DATATOKEN, ZERO_ADDRESS, ProviderFee, contract_abi

log = structlog.get_logger(__name__)

_TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")


# --- settings ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainSettings:
    rpc_url: str
    # The chain the orders must be on; the node is checked against it before the first order.
    chain_id: int
    # Hex private key of the provider's signer: it signs provider fees and receives them.
    provider_key: str = field(repr=False)
    # An order counts once its block has this many confirmations (1: mined).
    min_confirmations: int = 1
    # The token the provider fee is paid in and its amount in the token's smallest unit; the zero
    # address or 0 means no fee (the order still carries a fee quote signed by this provider).
    provider_fee_token: str = ZERO_ADDRESS
    provider_fee_amount: int = 0
    # How long a quote stays valid: the order must be mined, and the job started, before then.
    fee_validity_seconds: int = 3600
    # One JSON-RPC call to the node, at most.
    request_timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        try:
            url = urlsplit(self.rpc_url)
            url_fits = url.scheme in ("http", "https") and bool(url.hostname) and url.port != 0
        except ValueError:  # a port that is no number
            url_fits = False
        if not url_fits:
            raise ConfigError("the chain RPC URL is not an http(s)://host[:port]/… URL")
        if self.chain_id <= 0:
            raise ConfigError("the chain id must be a positive integer")
        try:
            Account.from_key(self.provider_key)
        except Exception:
            raise ConfigError("the provider key is not a hex private key (32 bytes, 0x…)") from None
        if self.min_confirmations < 1:
            raise ConfigError("the minimum number of confirmations must be at least 1")
        if not Web3.is_address(self.provider_fee_token):
            raise ConfigError(f"the provider fee token {self.provider_fee_token!r} is not an address")
        if self.provider_fee_amount < 0:
            raise ConfigError("the provider fee amount cannot be negative")
        if self.fee_validity_seconds <= 0:
            raise ConfigError("the provider fee validity must be a positive number of seconds")

    @property
    def provider_address(self) -> str:
        return str(Account.from_key(self.provider_key).address)

    @classmethod
    def from_env(cls, provider_key: str | None = None) -> ChainSettings | None:
        """The settings from C2D_CHAIN_*, C2D_MIN_CONFIRMATIONS and C2D_PROVIDER_*; None when no
        chain is configured (C2D_CHAIN_RPC_URL unset): the provider then checks no orders. The
        signer is `provider_key` when given (the provider's own identity key), else
        C2D_PROVIDER_KEY, else the file C2D_PROVIDER_KEY_FILE names."""
        rpc_url = env_str("C2D_CHAIN_RPC_URL", "").strip()
        if not rpc_url:
            return None
        chain_id = env_int("C2D_CHAIN_ID", 0)
        if chain_id <= 0:
            raise ConfigError(
                "C2D_CHAIN_ID must be set along with C2D_CHAIN_RPC_URL: the id of the chain orders are "
                "placed on (1 Ethereum, 137 Polygon, 31337 a local anvil)"
            )
        return cls(
            rpc_url=rpc_url,
            chain_id=chain_id,
            provider_key=provider_key or _provider_key_from_env(),
            min_confirmations=env_int("C2D_MIN_CONFIRMATIONS", cls.min_confirmations),
            provider_fee_token=env_str("C2D_PROVIDER_FEE_TOKEN", "").strip() or ZERO_ADDRESS,
            provider_fee_amount=env_int("C2D_PROVIDER_FEE_AMOUNT", cls.provider_fee_amount),
            fee_validity_seconds=env_int("C2D_PROVIDER_FEE_VALIDITY_SECONDS", cls.fee_validity_seconds),
        )


def _provider_key_from_env() -> str:
    # As the provider's own settings read it: the key itself wins over the file.
    key = env_str("C2D_PROVIDER_KEY", "").strip()
    key_file = env_str("C2D_PROVIDER_KEY_FILE", "").strip()
    if not key and key_file:
        try:
            key = Path(key_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"C2D_PROVIDER_KEY_FILE={key_file!r} cannot be read: {exc.strerror}") from None
    if not key:
        raise ConfigError(
            "C2D_CHAIN_RPC_URL is set, so the provider needs its signer key: "
            "C2D_PROVIDER_KEY (hex private key) or C2D_PROVIDER_KEY_FILE (a file holding it)"
        )
    return key


# --- provider fees ----------------------------------------------------------------------------------
# ProviderFee (the struct) lives in c2d_common.ocean_contracts, shared with the CLI that places orders;
# it is imported here under its old name, which tests and callers use.


def fee_message_hash(
    provider_data: bytes, fee_address: str, fee_token: str, fee_amount: int, valid_until: int
) -> bytes:
    """The hash a provider signs (EIP-191) to issue a fee."""
    # ERC20Template.checkProviderFee: keccak256(abi.encodePacked(providerData, providerFeeAddress,
    # providerFeeToken, providerFeeAmount, validUntil)), then signed as an EIP-191 personal message.
    return bytes(
        Web3.solidity_keccak(
            ["bytes", "address", "address", "uint256", "uint256"],
            [
                provider_data,
                Web3.to_checksum_address(fee_address),
                Web3.to_checksum_address(fee_token),
                fee_amount,
                valid_until,
            ],
        )
    )


def provider_data_for(
    *, environment_id: str, datatoken: str, service_index: int, consumer: str, now: int
) -> bytes:
    """What a quote binds: Ocean's fields (environment, timestamp, dt) and ours (serviceIndex,
    consumer), so that a fee quoted for one consumer, dataset, service or environment pays for no
    other."""
    return json.dumps(
        {
            "environment": environment_id,
            "timestamp": now,
            "dt": Web3.to_checksum_address(datatoken),
            "serviceIndex": service_index,
            "consumer": Web3.to_checksum_address(consumer),
        },
        separators=(",", ":"),
    ).encode()


def quote_provider_fee(
    settings: ChainSettings,
    *,
    datatoken: str,
    service_index: int,
    environment_id: str,
    consumer: str,
    valid_seconds: int | None = None,
    now: float | None = None,
    amount: int | None = None,
) -> ProviderFee:
    """A provider fee signed by this provider, which ERC20Template.startOrder accepts, valid for
    `valid_seconds` (default: the settings') from `now` (default: the wall clock), of `amount`
    (default: the settings'; 0 for a free environment)."""
    for name, address in (("datatoken", datatoken), ("consumer", consumer)):
        if not Web3.is_address(address):
            raise InvalidArgument(f"the {name} {address!r} is not an address")
    if service_index < 0:
        raise InvalidArgument("the service index cannot be negative")
    seconds = settings.fee_validity_seconds if valid_seconds is None else valid_seconds
    if seconds <= 0:
        raise InvalidArgument("a provider fee must be valid for a positive number of seconds")
    issued_at = int(time.time() if now is None else now)
    provider_data = provider_data_for(
        environment_id=environment_id,
        datatoken=datatoken,
        service_index=service_index,
        consumer=consumer,
        now=issued_at,
    )
    fee_address = settings.provider_address
    fee_token = Web3.to_checksum_address(settings.provider_fee_token)
    valid_until = issued_at + seconds
    fee_amount = settings.provider_fee_amount if amount is None else amount
    if fee_amount < 0:
        raise InvalidArgument("a provider fee cannot be negative")
    message_hash = fee_message_hash(provider_data, fee_address, fee_token, fee_amount, valid_until)
    signed = Account.sign_message(encode_defunct(primitive=message_hash), settings.provider_key)
    return ProviderFee(
        provider_fee_address=fee_address,
        provider_fee_token=fee_token,
        provider_fee_amount=fee_amount,
        v=signed.v,
        r=signed.r.to_bytes(32, "big"),
        s=signed.s.to_bytes(32, "big"),
        valid_until=valid_until,
        provider_data=provider_data,
    )


def fee_signer(fee: ProviderFee) -> str | None:
    """The address that signed a provider fee, or None when the signature does not parse."""
    if fee.v not in (27, 28):
        return None  # ecrecover's only values; eth-account would read others as EIP-155 ones
    message_hash = fee_message_hash(
        fee.provider_data,
        fee.provider_fee_address,
        fee.provider_fee_token,
        fee.provider_fee_amount,
        fee.valid_until,
    )
    try:
        return str(
            Account.recover_message(
                encode_defunct(primitive=message_hash),
                vrs=(fee.v, int.from_bytes(fee.r, "big"), int.from_bytes(fee.s, "big")),
            )
        )
    except Exception:
        return None


# --- errors -------------------------------------------------------------------------------------------


class OrderRejected(DomainError):
    """Any reason an order does not pay for the job; each subclass also derives from the
    c2d_common error whose status code fits."""


class MalformedOrderTx(OrderRejected, InvalidArgument):
    pass


class OrderNotFound(OrderRejected, NotFound):
    pass


class OrderNotMined(OrderRejected, FailedPrecondition):
    pass


class OrderReverted(OrderRejected, FailedPrecondition):
    pass


class NotEnoughConfirmations(OrderRejected, FailedPrecondition):
    def __init__(self, message: str, *, missing: int):
        super().__init__(message)
        self.missing = missing


class NotAnOrder(OrderRejected, FailedPrecondition):
    """The transaction emitted no order event at all."""


class OrderForAnotherDatatoken(OrderRejected, FailedPrecondition):
    pass


class OrderForAnotherService(OrderRejected, FailedPrecondition):
    pass


class OrderForAnotherConsumer(OrderRejected, PermissionDenied):
    pass


class OrderAmountTooLow(OrderRejected, FailedPrecondition):
    pass


class ProviderFeeNotIssued(OrderRejected, FailedPrecondition):
    """The order's provider fee was not signed by this provider."""


class ProviderFeeMismatch(OrderRejected, FailedPrecondition):
    """The fee was this provider's, but quoted for another environment, dataset, service or consumer."""


class ProviderFeeExpired(OrderRejected, FailedPrecondition):
    pass


class OrderExpired(OrderRejected, FailedPrecondition):
    pass


class ChainUnavailable(Unavailable):
    pass


_UNREACHABLE = "the chain node this provider checks orders on is unreachable; try again shortly"


# --- order checks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedOrder:
    # The transaction the consumer gave (startOrder or reuseOrder), lowercase 0x-hex: the key to
    # record as spent so that one transaction pays for one job.
    tx_hash: str
    datatoken: str  # checksummed
    consumer: str  # checksummed; the request's signer
    payer: str  # checksummed; who paid the datatoken (may differ from the consumer)
    service_index: int
    # The block of `tx_hash`.
    block_number: int
    block_timestamp: int
    # Unix time after which the order no longer counts; None: the service never expires.
    expires_at: int | None
    # The startOrder transaction, lowercase; equals tx_hash unless tx_hash is a reuseOrder.
    order_tx_hash: str
    # When the startOrder transaction was mined (expiry runs from here, reused or not).
    ordered_at: int
    environment_id: str
    provider_fee_token: str
    provider_fee_amount: int
    # Unix time; 0: Ocean's "no limit" (this provider never quotes it).
    provider_fee_valid_until: int

    @property
    def reused(self) -> bool:
        return self.order_tx_hash != self.tx_hash


def _datatoken_abi() -> list[dict[str, Any]]:
    return contract_abi("ERC20Template")


@cache
def _event_topics() -> dict[str, bytes]:
    return {
        item["name"]: bytes(event_abi_to_log_topic(item))  # type: ignore[arg-type]
        for item in _datatoken_abi()
        if item["type"] == "event" and item["name"] in ("OrderStarted", "OrderReused", "ProviderFee")
    }


def _hex(value: bytes | str) -> str:
    return ("0x" + value.hex()) if isinstance(value, bytes | bytearray) else value.lower()


def _when(timestamp: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


@dataclass(frozen=True)
class _MinedTx:
    tx_hash: str
    receipt: Any
    block_number: int
    block_timestamp: int


class OrderChecker:
    """Checks datatoken orders on the node at `settings.rpc_url`; one per provider, closed at
    shutdown (`await close()`, or `async with`)."""

    def __init__(self, settings: ChainSettings):
        self.settings = settings
        self.chain_id = settings.chain_id
        self.provider_address = settings.provider_address
        self.web3 = AsyncWeb3(
            AsyncHTTPProvider(
                settings.rpc_url,
                request_kwargs={"timeout": aiohttp.ClientTimeout(total=settings.request_timeout_seconds)},
                # A node that is down answers UNAVAILABLE at once; the consumer's client retries.
                exception_retry_configuration=None,
            )
        )
        self._contract = self.web3.eth.contract(abi=_datatoken_abi())
        # For the log: hosted nodes carry their API key in the URL (path, query or user part).
        node = urlsplit(settings.rpc_url)
        self._node = f"{node.scheme}://{node.hostname}" + (f":{node.port}" if node.port else "")
        self._chain_checked = False

    async def close(self) -> None:
        await self.web3.provider.disconnect()

    async def __aenter__(self) -> OrderChecker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def quote_provider_fee(
        self,
        *,
        datatoken: str,
        service_index: int,
        environment_id: str,
        consumer: str,
        valid_seconds: int | None = None,
        now: float | None = None,
        amount: int | None = None,
    ) -> ProviderFee:
        return quote_provider_fee(
            self.settings,
            datatoken=datatoken,
            service_index=service_index,
            environment_id=environment_id,
            consumer=consumer,
            valid_seconds=valid_seconds,
            now=now,
            amount=amount,
        )

    async def verify_order(
        self,
        *,
        tx_hash: str,
        datatoken: str,
        service_index: int,
        consumer: str,
        service_timeout_seconds: int,
        environment_id: str,
        now: float | None = None,
    ) -> VerifiedOrder:
        """The order in `tx_hash` if it pays for `consumer` to use service `service_index` of
        `datatoken` in `environment_id` at `now` (default: the wall clock); raises an
        `OrderRejected` saying why not, or `ChainUnavailable`."""
        if not isinstance(tx_hash, str) or not _TX_HASH.fullmatch(tx_hash):
            raise MalformedOrderTx(
                f"{str(tx_hash)[:80]!r} is not a transaction hash (0x and 64 hex digits); "
                "give the hash of your startOrder transaction"
            )
        if not Web3.is_address(datatoken):
            raise InvalidArgument(f"the datatoken {datatoken!r} is not an address")
        if not Web3.is_address(consumer):
            raise InvalidArgument(f"the consumer {consumer!r} is not an address")
        tx_hash = tx_hash.lower()
        datatoken = Web3.to_checksum_address(datatoken)
        consumer = Web3.to_checksum_address(consumer)
        checked_at = int(time.time() if now is None else now)

        try:
            await self._check_chain_id()
            return await self._verify(
                tx_hash=tx_hash,
                datatoken=datatoken,
                service_index=service_index,
                consumer=consumer,
                service_timeout_seconds=service_timeout_seconds,
                environment_id=environment_id,
                now=checked_at,
            )
        except (
            aiohttp.ClientError,
            OSError,
            TimeoutError,
            ProviderConnectionError,
            BadResponseFormat,
            TooManyRequests,
            Web3RPCError,
        ) as exc:
            log.warning("chain node unavailable", node=self._node, error=repr(exc))
            raise ChainUnavailable(_UNREACHABLE) from None

    async def _check_chain_id(self) -> None:
        if self._chain_checked:
            return
        node_chain_id = await self.web3.eth.chain_id
        if node_chain_id != self.settings.chain_id:
            log.error(
                "chain node is on another chain",
                node=self._node,
                node_chain_id=node_chain_id,
                configured_chain_id=self.settings.chain_id,
            )
            raise ChainUnavailable(
                "this provider cannot check orders now: its chain node is misconfigured; "
                "tell the provider's operator"
            )
        self._chain_checked = True

    async def _mined(self, tx_hash: str, *, what: str) -> _MinedTx:
        try:
            receipt = await self.web3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            receipt = None
        if receipt is None:
            try:
                await self.web3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                raise OrderNotFound(
                    f"{what} {tx_hash} is not on chain {self.settings.chain_id}; "
                    "check the hash and that you ordered on that chain"
                ) from None
            raise OrderNotMined(f"{what} {tx_hash} is not mined yet; start the job once it is")
        if receipt["status"] != 1:
            raise OrderReverted(
                f"{what} {tx_hash} failed on chain (reverted); it paid for nothing, order again"
            )
        block_number = int(receipt["blockNumber"])
        latest = int(await self.web3.eth.block_number)
        confirmations = latest - block_number + 1
        needed = self.settings.min_confirmations
        if confirmations < needed:
            missing = needed - confirmations
            raise NotEnoughConfirmations(
                f"{what} {tx_hash} has {confirmations} of the {needed} confirmations this provider "
                f"requires; start the job again after {missing} more block{'s' if missing > 1 else ''}",
                missing=missing,
            )
        block = await self.web3.eth.get_block(block_number)
        return _MinedTx(tx_hash, receipt, block_number, int(block["timestamp"]))

    def _events(self, receipt: Any, name: str, *, emitter: str | None) -> list[Any]:
        """The `name` events in the receipt, from `emitter` only (None: from any contract). Events
        are matched by topic and address here because web3's process_receipt does not look at the
        address: any contract may emit an event that looks like a datatoken's."""
        topic = _event_topics()[name]
        event = getattr(self._contract.events, name)()
        found = []
        for entry in receipt["logs"]:
            topics = entry["topics"]
            if not topics or bytes(topics[0]) != topic:
                continue
            if emitter is not None and entry["address"].lower() != emitter.lower():
                continue
            try:
                found.append(event.process_log(entry))
            except Exception:
                continue  # same topic, other layout: not a datatoken's event
        return found

    async def _verify(
        self,
        *,
        tx_hash: str,
        datatoken: str,
        service_index: int,
        consumer: str,
        service_timeout_seconds: int,
        environment_id: str,
        now: int,
    ) -> VerifiedOrder:
        paid = await self._mined(tx_hash, what="transaction")
        order = paid
        started = self._events(paid.receipt, "OrderStarted", emitter=datatoken)
        if not started:
            reused = self._events(paid.receipt, "OrderReused", emitter=datatoken)
            if reused:
                original = _hex(reused[0]["args"]["orderTxId"])
                order = await self._mined(original, what=f"the order that {tx_hash} reuses,")
                started = self._events(order.receipt, "OrderStarted", emitter=datatoken)
                if not started:
                    raise NotAnOrder(
                        f"transaction {tx_hash} reuses {original}, which is no order of this "
                        f"dataset's datatoken {datatoken}; reuse one of your orders of it"
                    )
        if not started:
            others = {e["address"] for e in self._events(paid.receipt, "OrderStarted", emitter=None)}
            if others:
                raise OrderForAnotherDatatoken(
                    f"order {tx_hash} is for another datatoken ({', '.join(sorted(others))}), not this "
                    f"dataset's {datatoken}; order this datatoken's service {service_index}"
                )
            raise NotAnOrder(
                f"transaction {tx_hash} is not an order of datatoken {datatoken} (it emitted no "
                "OrderStarted); give the hash of your startOrder transaction"
            )

        for_service = [e for e in started if int(e["args"]["serviceIndex"]) == service_index]
        if not for_service:
            ordered = sorted({int(e["args"]["serviceIndex"]) for e in started})
            raise OrderForAnotherService(
                f"order {order.tx_hash} is for service {', '.join(map(str, ordered))} of datatoken "
                f"{datatoken}, not service {service_index}; order service {service_index}"
            )
        # The consumer named in the order must be the request's signer. Whoever paid (the payer) may
        # be anyone: paying for someone else gives that someone, not the payer, the right to run.
        for_consumer = [e for e in for_service if e["args"]["consumer"].lower() == consumer.lower()]
        if not for_consumer:
            named = for_service[0]["args"]["consumer"]
            raise OrderForAnotherConsumer(
                f"order {order.tx_hash} was placed for consumer {named}, not for {consumer} who signed "
                "this request; sign with the consumer's key, or order for your own address"
            )
        paying = [e for e in for_consumer if int(e["args"]["amount"]) >= ONE_DATATOKEN]
        if not paying:
            raise OrderAmountTooLow(
                f"order {order.tx_hash} paid {int(for_consumer[0]['args']['amount']) / ONE_DATATOKEN:g} "
                "datatokens; an order must pay 1"
            )
        order_event = paying[0]

        fee = self._check_provider_fee(
            paid,
            datatoken=datatoken,
            service_index=service_index,
            consumer=consumer,
            environment_id=environment_id,
            now=now,
        )

        expires_at = order.block_timestamp + service_timeout_seconds if service_timeout_seconds > 0 else None
        if expires_at is not None and now > expires_at:
            raise OrderExpired(
                f"order {order.tx_hash} expired at {_when(expires_at)}: the service allows "
                f"{service_timeout_seconds} s after ordering; order again"
            )
        return VerifiedOrder(
            tx_hash=tx_hash,
            datatoken=datatoken,
            consumer=consumer,
            payer=Web3.to_checksum_address(order_event["args"]["payer"]),
            service_index=service_index,
            block_number=paid.block_number,
            block_timestamp=paid.block_timestamp,
            expires_at=expires_at,
            order_tx_hash=order.tx_hash,
            ordered_at=order.block_timestamp,
            environment_id=environment_id,
            provider_fee_token=fee.provider_fee_token,
            provider_fee_amount=fee.provider_fee_amount,
            provider_fee_valid_until=fee.valid_until,
        )

    def _check_provider_fee(
        self,
        paid: _MinedTx,
        *,
        datatoken: str,
        service_index: int,
        consumer: str,
        environment_id: str,
        now: int,
    ) -> ProviderFee:
        fees = [
            ProviderFee(
                provider_fee_address=Web3.to_checksum_address(e["args"]["providerFeeAddress"]),
                provider_fee_token=Web3.to_checksum_address(e["args"]["providerFeeToken"]),
                provider_fee_amount=int(e["args"]["providerFeeAmount"]),
                v=int(e["args"]["v"]),
                r=bytes(e["args"]["r"]),
                s=bytes(e["args"]["s"]),
                valid_until=int(e["args"]["validUntil"]),
                provider_data=bytes(e["args"]["providerData"]),
            )
            for e in self._events(paid.receipt, "ProviderFee", emitter=datatoken)
        ]
        # The contract has already checked that providerFeeAddress signed the fee; we check it
        # again since a datatoken need not be Ocean's template.
        ours = [
            f
            for f in fees
            if f.provider_fee_address.lower() == self.provider_address.lower()
            and (fee_signer(f) or "").lower() == self.provider_address.lower()
        ]
        if not ours:
            raise ProviderFeeNotIssued(
                f"the provider fee in {paid.tx_hash} was not issued by this provider "
                f"({self.provider_address}); ask this provider for a fee (initialize) and order with it"
            )
        problems: list[str] = []
        for fee in ours:
            problem = _binding_problem(
                fee.provider_data,
                datatoken=datatoken,
                service_index=service_index,
                consumer=consumer,
                environment_id=environment_id,
            )
            if problem is None:
                break
            problems.append(problem)
        else:
            raise ProviderFeeMismatch(
                f"the provider fee in {paid.tx_hash} was quoted {problems[0]}; ask for a fee for this "
                "dataset, service, environment and consumer, and order with it"
            )
        if fee.valid_until and paid.block_timestamp > fee.valid_until:
            raise ProviderFeeExpired(
                f"the provider fee in {paid.tx_hash} was valid until {_when(fee.valid_until)}, but the "
                f"transaction was mined at {_when(paid.block_timestamp)}; ask for a new fee and order again"
            )
        if fee.valid_until and now > fee.valid_until:
            raise ProviderFeeExpired(
                f"the provider fee paid in {paid.tx_hash} was valid until {_when(fee.valid_until)}; "
                "ask for a new fee and reuse your order with it (reuseOrder), or order again"
            )
        return fee


def _binding_problem(
    provider_data: bytes, *, datatoken: str, service_index: int, consumer: str, environment_id: str
) -> str | None:
    """None when the quote's providerData binds exactly this request, else what it was quoted for."""
    try:
        data = json.loads(provider_data)
    except ValueError:
        return "with data this provider cannot read"
    if not isinstance(data, dict):
        return "with data this provider cannot read"
    quoted_dt = data.get("dt")
    if not isinstance(quoted_dt, str) or quoted_dt.lower() != datatoken.lower():
        return f"for datatoken {quoted_dt}, not {datatoken}"
    quoted_index = data.get("serviceIndex")
    if type(quoted_index) is not int or quoted_index != service_index:
        return f"for service {quoted_index}, not {service_index}"
    quoted_consumer = data.get("consumer")
    if not isinstance(quoted_consumer, str) or quoted_consumer.lower() != consumer.lower():
        return f"for consumer {quoted_consumer}, not {consumer}"
    quoted_environment = data.get("environment")
    if quoted_environment != environment_id:
        return f"for environment {quoted_environment!r}, not {environment_id!r}"
    return None
