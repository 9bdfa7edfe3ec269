"""`c2d create-datatoken`, `c2d mint-datatokens` and `c2d order`: the chain side of paid jobs, with
Ocean's own v4 contracts (c2d_common.ocean_contracts, the artifacts the provider checks orders with).

A publisher creates a data NFT with one datatoken through Ocean's ERC721Factory
(`createNftWithErc20`), names the datatoken in `c2d publish --datatoken`, and mints datatokens to
its consumers. A consumer orders: InitializeCompute says what each order must carry (datatoken,
service index, the provider fee the provider signed), and the datatoken's `startOrder` takes one
datatoken and the fees; `c2d start --order DID=0xTX` then runs the job. Every transaction is signed
with the CLI's key and sent to --rpc-url (C2D_CHAIN_RPC_URL). docs/orders.md has the whole flow.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception
from web3.logs import DISCARD

from c2d.provider.v1 import request_response_pb2 as pb
from c2d_cli.client import ProviderClient
from c2d_common.errors import InvalidArgument
from c2d_common.ocean_contracts import (
    ONE_DATATOKEN,
    ZERO_ADDRESS,
    ProviderFee,
    contract_abi,
    deployed_address,
)

# How long a transaction may take to be mined before the CLI gives up waiting (it may still be).
RECEIPT_TIMEOUT_SECONDS = 180
# Ocean's ERC20Template is template 1 of the factory, ERC721Template template 1 too.
TEMPLATE_INDEX = 1
# The factory takes a cap, which ERC20Template ignores (its supply is unlimited): ocean.py passes this.
MAX_UINT256 = 2**256 - 1


def _say(line: str) -> None:
    """What the user reads; stdout keeps only what a script captures (an address, DID=TX)."""
    print(line, file=sys.stderr, flush=True)


def _datatokens(text: str, option: str) -> int:
    """A number of datatokens (18 decimals) in the contract's smallest unit."""
    try:
        amount = Decimal(text) * ONE_DATATOKEN
    except InvalidOperation:
        raise SystemExit(f"c2d: {option} {text!r} is not a number of datatokens") from None
    if not amount.is_finite() or amount <= 0 or amount != amount.to_integral_value():
        raise SystemExit(f"c2d: {option} must be a positive number of datatokens with at most 18 decimals")
    return int(amount)


def _address(text: str, option: str) -> str:
    if not Web3.is_address(text):
        raise SystemExit(f"c2d: {option} {text[:80]!r} is not an Ethereum address (0x and 40 hex digits)")
    return Web3.to_checksum_address(text)


def _shown_node(rpc_url: str) -> str:
    # Hosted nodes carry their API key in the URL's path or query: never print those.
    try:
        parts = urlsplit(rpc_url)
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "the chain node"


@dataclass
class ChainSession:
    """The CLI's key on one chain node: reads contracts and sends transactions it signs."""

    w3: Web3
    account: LocalAccount
    chain_id: int
    node: str

    @classmethod
    def connect(cls, rpc_url: str | None, key: str) -> ChainSession:
        if not rpc_url:
            raise SystemExit(
                "c2d: this command needs a chain node: --rpc-url URL or C2D_CHAIN_RPC_URL (the JSON-RPC "
                "URL of the chain the provider checks orders on)"
            )
        try:
            parts = urlsplit(rpc_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError
        except ValueError:
            raise SystemExit("c2d: --rpc-url must be an http(s)://host[:port]/… URL") from None
        node = _shown_node(rpc_url)
        w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
        try:
            chain_id = int(w3.eth.chain_id)
        except (requests.RequestException, OSError, Web3Exception, ValueError):
            raise SystemExit(f"c2d: the chain node at {node} does not answer; check --rpc-url") from None
        return cls(w3, Account.from_key(key), chain_id, node)

    @property
    def address(self) -> str:
        return str(self.account.address)

    def contract(self, name: str, address: str) -> Contract:
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=contract_abi(name))

    def balance_of(self, token: str) -> int:
        # Any ERC-20's ABI does for balanceOf; ERC20Template's is at hand.
        return int(self.contract("ERC20Template", token).functions.balanceOf(self.address).call())

    def require_contract(self, address: str, what: str) -> None:
        if not self.w3.eth.get_code(Web3.to_checksum_address(address)):
            raise SystemExit(
                f"c2d: {what} ({address}) is no contract on chain {self.chain_id} ({self.node}); "
                "is --rpc-url the chain it lives on?"
            )

    def send(self, call: Any, what: str) -> Any:
        """Signs and sends `call`, waits until it is mined; SystemExit saying why when it cannot."""
        if self.w3.eth.get_balance(self.account.address) == 0:
            raise SystemExit(
                f"c2d: {self.address} has no coins on chain {self.chain_id} to pay the gas of {what}; "
                "fund it first"
            )
        try:
            transaction = call.build_transaction(
                {
                    "from": self.account.address,
                    "nonce": self.w3.eth.get_transaction_count(self.account.address, "pending"),
                    "chainId": self.chain_id,
                }
            )
        except ContractLogicError as exc:
            # Estimating the gas ran the call: it would revert, and the reason is the contract's.
            raise SystemExit(f"c2d: {what} would fail on chain: {exc.message or exc}") from None
        signed = self.account.sign_transaction(transaction)
        try:
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=RECEIPT_TIMEOUT_SECONDS, poll_latency=0.1
            )
        except TimeExhausted:
            raise SystemExit(
                f"c2d: {what} was sent but not mined within {RECEIPT_TIMEOUT_SECONDS} s; "
                f"look for transaction 0x{bytes(signed.hash).hex()} before sending it again"
            ) from None
        except Web3Exception as exc:
            raise SystemExit(f"c2d: the node refused {what}: {exc}") from None
        if receipt["status"] != 1:
            raise SystemExit(f"c2d: {what} reverted on chain (transaction 0x{bytes(tx_hash).hex()})")
        return receipt


# --- the publisher's commands -------------------------------------------------------------------------


async def cmd_create_datatoken(key: str, args: argparse.Namespace) -> int:
    return await asyncio.to_thread(create_datatoken, key, args)


def create_datatoken(key: str, args: argparse.Namespace) -> int:
    session = ChainSession.connect(args.rpc_url, key)
    factory_address = args.factory or deployed_address(session.chain_id, "ERC721Factory")
    if not factory_address:
        raise SystemExit(
            f"c2d: Ocean lists no ERC721Factory on chain {session.chain_id}: pass the factory's "
            "address with --factory (or C2D_ERC721_FACTORY)"
        )
    factory_address = _address(factory_address, "--factory")
    session.require_contract(factory_address, "the ERC721Factory")
    symbol = args.symbol or (re.sub(r"[^A-Z0-9]", "", args.name.upper())[:8] or "DATA")
    me = session.address
    factory = session.contract("ERC721Factory", factory_address)
    receipt = session.send(
        factory.functions.createNftWithErc20(
            (args.name, symbol, TEMPLATE_INDEX, args.token_uri, True, me),
            (
                TEMPLATE_INDEX,
                [f"{args.name} datatoken", f"{symbol}DT"],
                # minter, payment collector, publish market fee address and token: no market fee.
                [me, me, me, ZERO_ADDRESS],
                [MAX_UINT256, 0],
                [],
            ),
        ),
        "creating the data NFT and its datatoken",
    )
    nft = factory.events.NFTCreated().process_receipt(receipt, errors=DISCARD)
    created = factory.events.TokenCreated().process_receipt(receipt, errors=DISCARD)
    if not nft or not created:
        raise SystemExit(
            f"c2d: transaction 0x{bytes(receipt['transactionHash']).hex()} created no datatoken; "
            f"is {factory_address} Ocean's ERC721Factory?"
        )
    datatoken = Web3.to_checksum_address(created[0]["args"]["newTokenAddress"])
    _say(
        f"data NFT {Web3.to_checksum_address(nft[0]['args']['newTokenAddress'])} and datatoken "
        f"{datatoken} ({symbol}DT) created by {me} on chain {session.chain_id} "
        f"(transaction 0x{bytes(receipt['transactionHash']).hex()})"
    )
    if args.mint:
        _mint(session, datatoken, _address(args.to or me, "--to"), _datatokens(args.mint, "--mint"))
    _say(f"publish with: c2d publish FILE --name NAME --datatoken {datatoken}")
    print(datatoken, flush=True)
    return 0


async def cmd_mint_datatokens(key: str, args: argparse.Namespace) -> int:
    return await asyncio.to_thread(mint_datatokens, key, args)


def mint_datatokens(key: str, args: argparse.Namespace) -> int:
    datatoken = _address(args.datatoken, "DATATOKEN")
    to = _address(args.to, "--to")
    amount = _datatokens(args.amount, "--amount")
    session = ChainSession.connect(args.rpc_url, key)
    session.require_contract(datatoken, "datatoken")
    print(_mint(session, datatoken, to, amount), flush=True)
    return 0


def _mint(session: ChainSession, datatoken: str, to: str, amount: int) -> str:
    token = session.contract("ERC20Template", datatoken)
    if not token.functions.isMinter(session.address).call():
        raise SystemExit(
            f"c2d: {session.address} may not mint datatoken {datatoken}: only its minters may (the "
            "key that created it with c2d create-datatoken, or one its data NFT's owner adds)"
        )
    room = int(token.functions.cap().call()) - int(token.functions.totalSupply().call())
    if amount > room:
        raise SystemExit(
            f"c2d: datatoken {datatoken} can mint only {Decimal(room) / ONE_DATATOKEN} more (its cap)"
        )
    receipt = session.send(token.functions.mint(to, amount), f"minting datatoken {datatoken}")
    tx = "0x" + bytes(receipt["transactionHash"]).hex()
    _say(f"minted {Decimal(amount) / ONE_DATATOKEN} datatokens of {datatoken} to {to} (transaction {tx})")
    return tx


# --- the consumer's command ---------------------------------------------------------------------------


async def cmd_order(client: ProviderClient, args: argparse.Namespace) -> int:
    algorithm = args.algorithm if args.algorithm.startswith("did:") else ""
    response = await client.initialize_compute(args.dataset, algorithm, args.env)
    if not response.quotes:
        _say("this environment is free and nothing this job uses has a price: no order is needed")
        return 0
    orders = await asyncio.to_thread(place_orders, args.rpc_url, client.private_key, response)
    for did, tx in orders:
        print(f"{did}={tx}", flush=True)
    env = f" --env {args.env}" if args.env else ""
    _say(
        f"start the job with: c2d start --dataset … --algorithm …{env} "
        + " ".join(f"--order {did}={tx}" for did, tx in orders)
    )
    return 0


def place_orders(
    rpc_url: str | None, key: str, initialized: pb.InitializeComputeResponse
) -> list[tuple[str, str]]:
    """Ocean's order of each quoted asset, paid by the CLI's key for itself: checks first that it
    holds one datatoken of each and the fees (so a missing one sends nothing), approves what the
    datatoken will pull in fees, then calls startOrder. Answers (DID, transaction hash) pairs."""
    session = ChainSession.connect(rpc_url, key)
    if initialized.chain_id and session.chain_id != initialized.chain_id:
        raise SystemExit(
            f"c2d: the node at {session.node} is on chain {session.chain_id}, but the provider checks "
            f"orders on chain {initialized.chain_id}: give --rpc-url a node of chain {initialized.chain_id}"
        )
    planned = [_OrderPlan.of(session, quote) for quote in initialized.quotes]
    needed: dict[tuple[str, str], int] = {}  # (fee token, spender: the datatoken) -> amount
    held: dict[str, int] = {}
    for plan in planned:
        held[plan.datatoken] = held.get(plan.datatoken, 0) + ONE_DATATOKEN
        for token, amount in plan.fees:
            needed[(token, plan.datatoken)] = needed.get((token, plan.datatoken), 0) + amount
    for datatoken, amount in held.items():
        balance = session.balance_of(datatoken)
        if balance < amount:
            dids = ", ".join(p.did for p in planned if p.datatoken == datatoken)
            raise SystemExit(
                f"c2d: an order takes one datatoken {datatoken} ({dids}), and {session.address} holds "
                f"{Decimal(balance) / ONE_DATATOKEN}: ask the dataset's publisher for one "
                f"(c2d mint-datatokens {datatoken} --to {session.address})"
            )
    for token in {t for t, _ in needed}:
        total = sum(a for (t, _), a in needed.items() if t == token)
        balance = session.balance_of(token)
        if balance < total:
            raise SystemExit(
                f"c2d: the orders' fees take {total} of token {token} (smallest unit), and "
                f"{session.address} holds {balance}"
            )
    for (token, spender), amount in needed.items():
        fee_token = session.contract("ERC20Template", token)
        if int(fee_token.functions.allowance(session.address, spender).call()) < amount:
            what = f"approving {spender} to take the fees in {token}"
            session.send(fee_token.functions.approve(spender, amount), what)
    orders = []
    for plan in planned:
        receipt = session.send(
            session.contract("ERC20Template", plan.datatoken).functions.startOrder(
                session.address,
                plan.service_index,
                plan.provider_fee.as_contract_tuple(),
                (ZERO_ADDRESS, ZERO_ADDRESS, 0),  # no consume market fee
            ),
            f"the order of {plan.did}",
        )
        tx = "0x" + bytes(receipt["transactionHash"]).hex()
        _say(f"ordered {plan.did} (datatoken {plan.datatoken}, service {plan.service_index}): {tx}")
        orders.append((plan.did, tx))
    return orders


@dataclass(frozen=True)
class _OrderPlan:
    did: str
    datatoken: str
    service_index: int
    provider_fee: ProviderFee
    # What the datatoken pulls from the payer besides the datatoken: (token, amount) pairs.
    fees: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, session: ChainSession, quote: pb.OrderQuote) -> _OrderPlan:
        datatoken = _address(quote.datatoken_address, f"the datatoken of {quote.did}")
        session.require_contract(datatoken, f"the datatoken of {quote.did}")
        quoted = quote.provider_fee
        try:
            fee = ProviderFee.from_dict(
                {
                    "providerFeeAddress": quoted.provider_fee_address,
                    "providerFeeToken": quoted.provider_fee_token,
                    "providerFeeAmount": quoted.provider_fee_amount,
                    "v": quoted.v,
                    "r": quoted.r,
                    "s": quoted.s,
                    "validUntil": quoted.valid_until,
                    "providerData": quoted.provider_data,
                }
            )
        except InvalidArgument as exc:
            raise SystemExit(f"c2d: the provider's quote for {quote.did} does not parse: {exc}") from None
        fees = []
        if fee.provider_fee_amount > 0 and fee.provider_fee_token != ZERO_ADDRESS:
            fees.append((fee.provider_fee_token, fee.provider_fee_amount))
        # The publishing market's fee, which startOrder also takes when the datatoken has one.
        market, market_token, market_amount = (
            session.contract("ERC20Template", datatoken).functions.getPublishingMarketFee().call()
        )
        if int(market_amount) > 0 and market_token != ZERO_ADDRESS and market != ZERO_ADDRESS:
            fees.append((Web3.to_checksum_address(market_token), int(market_amount)))
        return cls(quote.did, datatoken, quote.service_index, fee, tuple(fees))


# --- the parser -----------------------------------------------------------------------------------


# Commands that talk to the chain only, not to the provider.
WITHOUT_PROVIDER: dict[str, Callable[[str, argparse.Namespace], Awaitable[int]]] = {
    "create-datatoken": cmd_create_datatoken,
    "mint-datatokens": cmd_mint_datatokens,
}
