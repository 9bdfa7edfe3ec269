"""A real Ethereum node (anvil) with Ocean's v4 contracts deployed from the ocean-contracts artifacts,
and the publisher's and consumer's side of an order, for tests.

One anvil and one deployment serve the whole test process (`shared_ocean_chain`); each test gets
the chain as the deployment left it through a snapshot that is reverted afterwards (the fixtures in
tests/chain/fixtures.py). Everything here is synchronous web3: it plays the other parties, the
provider's own code under test is the async `OrderChecker`.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import event_abi_to_log_topic
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from provider_svc.infra.chain import ONE_DATATOKEN, ZERO_ADDRESS, ChainSettings, ProviderFee

REPO = Path(__file__).resolve().parents[2]
ANVIL_IN_NODE_MODULES = REPO / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
# anvil's (and Hardhat's) well-known development mnemonic; its accounts hold 10,000 ETH each.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
ANVIL_CHAIN_ID = 31337

Signer = LocalAccount | str  # an account, or a hex private key


def anvil_binary() -> Path | None:
    """C2D_ANVIL, else the binary `npm install` put in node_modules, else `anvil` on PATH."""
    configured = os.environ.get("C2D_ANVIL")
    if configured:
        return Path(configured)
    if ANVIL_IN_NODE_MODULES.exists():
        return ANVIL_IN_NODE_MODULES
    found = shutil.which("anvil")
    return Path(found) if found else None


ANVIL_MISSING = (
    "anvil is not installed: run `npm install` in the repository (it installs "
    "@foundry-rs/anvil-linux-amd64 into node_modules), or set C2D_ANVIL to an anvil binary"
)


@cache
def dev_account(index: int) -> LocalAccount:
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def _as_account(signer: Signer) -> LocalAccount:
    return signer if isinstance(signer, LocalAccount) else Account.from_key(signer)


@cache
def artifact(name: str) -> dict[str, Any]:
    """A Hardhat artifact (abi, bytecode) of Ocean's contracts, from the ocean-contracts package."""
    return dict(json.loads(resources.files("artifacts").joinpath(f"{name}.json").read_text()))


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: anvil gets SIGKILL when this test process dies, however it dies.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


@dataclass
class AnvilNode:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, binary: Path, workdir: Path, *, timeout: float = 15.0) -> AnvilNode:
        """anvil on a free port (it binds port 0 and says which port it got)."""
        log_path = workdir / "anvil.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [str(binary), "--host", "127.0.0.1", "--port", "0", "--chain-id", str(ANVIL_CHAIN_ID)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,  # a file, not a pipe: anvil logs every transaction and must never block
                stderr=subprocess.STDOUT,
                # The death signal follows the thread that forks: only the main thread lives as long
                # as the process.
                preexec_fn=_die_with_parent
                if threading.current_thread() is threading.main_thread()
                else None,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(rb"Listening on 127\.0\.0\.1:(\d+)", log_path.read_bytes())
            if found:
                return cls(process, int(found.group(1)), log_path)
            if process.poll() is not None:
                break
            time.sleep(0.02)
        process.kill()
        process.wait()
        raise RuntimeError(f"anvil did not start: {log_path.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class OceanChain:
    """anvil with Ocean's v4 contracts, and helpers to act as its users.

    Dev accounts: `deployer` (owns the router and the OCEAN mock), `provider` (the provider's
    signer; `chain_settings()` uses its key), `publisher`, `consumer`, `stranger`."""

    node: AnvilNode
    w3: Web3
    ocean: Contract  # MockERC20 standing in for OCEAN; the deployer holds its supply
    router: Contract
    factory: Contract  # ERC721Factory
    deployer: LocalAccount = field(default_factory=lambda: dev_account(0))
    provider: LocalAccount = field(default_factory=lambda: dev_account(1))
    publisher: LocalAccount = field(default_factory=lambda: dev_account(2))
    consumer: LocalAccount = field(default_factory=lambda: dev_account(3))
    stranger: LocalAccount = field(default_factory=lambda: dev_account(4))
    deploy_seconds: float = 0.0
    _publishers: dict[str, LocalAccount] = field(default_factory=dict)

    @property
    def rpc_url(self) -> str:
        return self.node.rpc_url

    @property
    def chain_id(self) -> int:
        return ANVIL_CHAIN_ID

    # --- set-up --------------------------------------------------------------------------------------

    @classmethod
    def deploy(cls, node: AnvilNode) -> OceanChain:
        """Deploys what ERC721Factory needs, the way Ocean's own deployment does: OCEAN (a MockERC20),
        the community fee collector, a BPool template, FactoryRouter, the ERC20 and ERC721 templates,
        the factory, and tells the router about the factory."""
        started = time.monotonic()
        w3 = Web3(Web3.HTTPProvider(node.rpc_url, request_kwargs={"timeout": 30}))
        deployer = dev_account(0)

        def deploy(name: str, *args: Any) -> Contract:
            spec = artifact(name)
            receipt = _transact(
                w3, deployer, w3.eth.contract(abi=spec["abi"], bytecode=spec["bytecode"]).constructor(*args)
            )
            return w3.eth.contract(address=receipt["contractAddress"], abi=spec["abi"])

        ocean = deploy("MockERC20", deployer.address, "Ocean Token", "OCEAN")
        collector = deploy("OPFCommunityFeeCollector", deployer.address, deployer.address)
        pool_template = deploy("BPool")
        router = deploy(
            "FactoryRouter", deployer.address, ocean.address, pool_template.address, collector.address, []
        )
        erc20_template = deploy("ERC20Template")
        erc721_template = deploy("ERC721Template")
        factory = deploy("ERC721Factory", erc721_template.address, erc20_template.address, router.address)
        _transact(w3, deployer, router.functions.addFactory(factory.address))
        return cls(
            node=node,
            w3=w3,
            ocean=ocean,
            router=router,
            factory=factory,
            deploy_seconds=time.monotonic() - started,
        )

    def chain_settings(self, **overrides: Any) -> ChainSettings:
        """Settings for an OrderChecker on this chain, the `provider` account signing."""
        settings = ChainSettings(
            rpc_url=self.rpc_url, chain_id=self.chain_id, provider_key=self.provider.key.hex()
        )
        return replace(settings, **overrides)

    # --- publisher -----------------------------------------------------------------------------------

    def publish_datatoken(self, publisher: Signer | None = None, *, name: str = "Dataset") -> str:
        """A data NFT with one datatoken (ERC20Template, cap 1M, no publish market fee) owned by
        `publisher` (default: the `publisher` account), who may mint it. Returns the datatoken's
        checksummed address."""
        owner = _as_account(publisher) if publisher is not None else self.publisher
        self.fund_eth(owner.address)
        symbol = re.sub(r"[^A-Z0-9]", "", name.upper())[:8] or "DATA"
        receipt = _transact(
            self.w3,
            owner,
            self.factory.functions.createNftWithErc20(
                (name, symbol, 1, "https://example.org/nft", True, owner.address),
                (
                    1,
                    [f"{name} datatoken", f"{symbol}DT"],
                    [owner.address, owner.address, owner.address, ZERO_ADDRESS],
                    [10**6 * ONE_DATATOKEN, 0],
                    [],
                ),
            ),
        )
        created = self.factory.events.TokenCreated().process_receipt(receipt, errors=DISCARD)
        datatoken = Web3.to_checksum_address(created[0]["args"]["newTokenAddress"])
        self._publishers[datatoken.lower()] = owner
        return datatoken

    def datatoken(self, address: str) -> Contract:
        return self.w3.eth.contract(
            address=Web3.to_checksum_address(address), abi=artifact("ERC20Template")["abi"]
        )

    def mint_datatokens(self, datatoken: str, to: str, amount: int = ONE_DATATOKEN) -> None:
        """`amount` (wei; default one datatoken) of `datatoken`, minted by its publisher to `to`."""
        minter = self._publishers[datatoken.lower()]
        _transact(
            self.w3, minter, self.datatoken(datatoken).functions.mint(Web3.to_checksum_address(to), amount)
        )

    def balance_of(self, token: str, owner: str) -> int:
        return int(self.datatoken(token).functions.balanceOf(Web3.to_checksum_address(owner)).call())

    # --- money ---------------------------------------------------------------------------------------

    def fund_eth(self, address: str, wei: int = 10**21) -> None:
        """Gas money for any account (anvil_setBalance), e.g. one from `new_account()`."""
        if self.w3.eth.get_balance(Web3.to_checksum_address(address)) < wei // 2:
            self.w3.provider.make_request("anvil_setBalance", [Web3.to_checksum_address(address), hex(wei)])  # type: ignore[arg-type]

    def fund_ocean(self, to: str, amount: int) -> None:
        _transact(self.w3, self.deployer, self.ocean.functions.transfer(Web3.to_checksum_address(to), amount))

    def new_account(self) -> LocalAccount:
        account: LocalAccount = Account.create()
        self.fund_eth(account.address)
        return account

    # --- consumer ------------------------------------------------------------------------------------

    def start_order(
        self,
        payer: Signer,
        datatoken: str,
        service_index: int,
        provider_fee: ProviderFee,
        *,
        consumer_address: str | None = None,
        fund: bool = True,
        expect_revert: bool = False,
        wait: bool = True,
    ) -> str:
        """`payer` calls ERC20Template.startOrder(consumer, serviceIndex, providerFee, no market fee)
        and pays one datatoken; `consumer_address` defaults to the payer's. With `fund`, the payer is
        first given what the order costs (one datatoken minted by the publisher; the provider fee when
        it is in this chain's OCEAN) and the fee token approved. `expect_revert` sends the transaction
        without the gas estimate that would refuse it and checks that it failed on chain; without
        `wait`, it returns as soon as the node has the transaction (see `no_automine`). Returns the
        transaction hash, lowercase 0x-hex."""
        account = _as_account(payer)
        self.fund_eth(account.address)
        if fund:
            self.mint_datatokens(datatoken, account.address)
            self._pay_fee(account, datatoken, provider_fee)
        call = self.datatoken(datatoken).functions.startOrder(
            Web3.to_checksum_address(consumer_address or account.address),
            service_index,
            provider_fee.as_contract_tuple(),
            (ZERO_ADDRESS, ZERO_ADDRESS, 0),
        )
        return self._send(account, call, expect_revert=expect_revert, wait=wait)

    def reuse_order(
        self,
        payer: Signer,
        datatoken: str,
        order_tx_hash: str,
        provider_fee: ProviderFee,
        *,
        fund: bool = True,
    ) -> str:
        """`payer` calls ERC20Template.reuseOrder(orderTxId, providerFee): a fresh provider fee for
        an order already paid. Returns the transaction hash, lowercase 0x-hex."""
        account = _as_account(payer)
        self.fund_eth(account.address)
        if fund:
            self._pay_fee(account, datatoken, provider_fee)
        call = self.datatoken(datatoken).functions.reuseOrder(
            bytes.fromhex(order_tx_hash.removeprefix("0x")), provider_fee.as_contract_tuple()
        )
        return self._send(account, call)

    def _pay_fee(self, account: LocalAccount, datatoken: str, fee: ProviderFee) -> None:
        if fee.provider_fee_amount == 0 or fee.provider_fee_token == ZERO_ADDRESS:
            return
        token = self.datatoken(fee.provider_fee_token)  # any ERC20 ABI does for transfer and approve
        if fee.provider_fee_token.lower() == self.ocean.address.lower():
            self.fund_ocean(account.address, fee.provider_fee_amount)
        _transact(
            self.w3,
            account,
            token.functions.approve(Web3.to_checksum_address(datatoken), fee.provider_fee_amount),
        )

    def _send(
        self, account: LocalAccount, call: Any, *, expect_revert: bool = False, wait: bool = True
    ) -> str:
        if expect_revert:
            receipt = _transact(self.w3, account, call, gas=1_000_000, require_success=False)
            assert receipt["status"] == 0, "the transaction was expected to revert but succeeded"
            return _hex(receipt["transactionHash"])
        if not wait:
            return _hex(_send_raw(self.w3, account, call))
        return _hex(_transact(self.w3, account, call)["transactionHash"])

    # --- a datatoken that is not Ocean's template -----------------------------------------------------

    def deploy_event_emitter(self) -> str:
        """A contract that emits whatever datatoken events it is told to and checks nothing: what a
        datatoken that is not Ocean's template could do, or a forger calling it in the same
        transaction as a real order. Returns its address."""
        address = Web3.to_checksum_address("0x" + secrets.token_hex(20))
        self.w3.provider.make_request("anvil_setCode", [address, "0x" + EVENT_EMITTER_CODE.hex()])  # type: ignore[arg-type]
        return address

    def emit_events(self, sender: Signer, emitter: str, events: list[tuple[str, dict[str, Any]]]) -> str:
        """One transaction in which `emitter` emits these ERC20Template events (name, {argument:
        value}), in order; each must have two indexed arguments (OrderStarted and ProviderFee do).
        Returns the transaction hash, lowercase 0x-hex."""
        account = _as_account(sender)
        self.fund_eth(account.address)
        transaction: dict[str, Any] = {
            "from": account.address,
            "to": Web3.to_checksum_address(emitter),
            "data": b"".join(_event_record(name, arguments) for name, arguments in events),
            "nonce": self.w3.eth.get_transaction_count(account.address, "pending"),
            "chainId": ANVIL_CHAIN_ID,
            "gas": 1_000_000,
            "gasPrice": self.w3.eth.gas_price,
        }
        tx_hash = self.w3.eth.send_raw_transaction(account.sign_transaction(transaction).raw_transaction)
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.01)
        assert receipt["status"] == 1 and len(receipt["logs"]) == len(events)
        return _hex(bytes(tx_hash))

    # --- the node's clock and blocks -----------------------------------------------------------------

    def mine(self, blocks: int = 1) -> None:
        self.w3.provider.make_request("anvil_mine", [hex(blocks)])  # type: ignore[arg-type]

    def advance_time(self, seconds: int) -> int:
        """Moves the chain's clock forward and mines a block with the new time; returns its timestamp."""
        self.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        self.mine()
        return self.latest_timestamp()

    def latest_timestamp(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def block_timestamp_of(self, tx_hash: str) -> int:
        receipt = self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        return int(self.w3.eth.get_block(receipt["blockNumber"])["timestamp"])

    @contextlib.contextmanager
    def no_automine(self) -> Iterator[None]:
        """Transactions sent inside stay pending until `mine()` (or the end of the block)."""
        self.w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
        try:
            yield
        finally:
            self.w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]

    def snapshot(self) -> str:
        return str(self.w3.provider.make_request("evm_snapshot", [])["result"])  # type: ignore[arg-type]

    def revert(self, snapshot_id: str) -> None:
        result = self.w3.provider.make_request("evm_revert", [snapshot_id])  # type: ignore[arg-type]
        assert result.get("result") is True, f"evm_revert failed: {result}"


def _event_emitter_code() -> bytes:
    """EVM runtime code: for each record [size][topic0][topic1][topic2][data: size bytes] of the
    calldata (32-byte words), LOG3(data, topic0, topic1, topic2)."""
    push1, jumpdest, jump, jumpi, stop, add, lt, iszero = 0x60, 0x5B, 0x56, 0x57, 0x00, 0x01, 0x10, 0x15
    calldatasize, calldataload, calldatacopy, log3 = 0x36, 0x35, 0x37, 0xA3
    dup1, dup2, dup3, dup4 = 0x80, 0x81, 0x82, 0x83
    loop, end = 0x02, 0x2E
    code = bytes(
        [
            push1, 0x00,  # ptr = 0
            jumpdest,  # loop (0x02): stack [ptr]
            calldatasize, dup2, lt, iszero, push1, end, jumpi,  # ptr >= calldatasize: end
            dup1, calldataload,  # [ptr, size]
            dup1, dup3, push1, 0x80, add, push1, 0x00, calldatacopy,  # memory[0:size] = data
            dup2, push1, 0x60, add, calldataload,  # [ptr, size, topic2]
            dup3, push1, 0x40, add, calldataload,  # [.., topic1]
            dup4, push1, 0x20, add, calldataload,  # [.., topic0]
            dup4, push1, 0x00, log3,  # LOG3(0, size, topic0, topic1, topic2): [ptr, size]
            push1, 0x80, add, add,  # ptr += 128 + size
            push1, loop, jump,
            jumpdest,  # end (0x2E)
            stop,
        ]
    )  # fmt: skip
    assert code[loop] == jumpdest and code[end] == jumpdest
    return code


EVENT_EMITTER_CODE = _event_emitter_code()


def _event_record(name: str, arguments: dict[str, Any]) -> bytes:
    (event,) = [e for e in artifact("ERC20Template")["abi"] if e["type"] == "event" and e["name"] == name]
    indexed = [i for i in event["inputs"] if i["indexed"]]
    plain = [i for i in event["inputs"] if not i["indexed"]]
    assert len(indexed) == 2, f"{name} has {len(indexed)} indexed arguments; the emitter logs two"
    topics = [bytes(event_abi_to_log_topic(event))] + [
        abi_encode([i["type"]], [arguments[i["name"]]]) for i in indexed
    ]
    data = abi_encode([i["type"] for i in plain], [arguments[i["name"]] for i in plain])
    return len(data).to_bytes(32, "big") + b"".join(topics) + data


def _hex(value: bytes | str) -> str:
    return ("0x" + bytes(value).hex()) if not isinstance(value, str) else value.lower()


def _send_raw(w3: Web3, account: LocalAccount, call: Any, *, gas: int | None = None) -> bytes:
    params: dict[str, Any] = {
        "from": account.address,
        "nonce": w3.eth.get_transaction_count(account.address, "pending"),
        "chainId": ANVIL_CHAIN_ID,
    }
    if gas is not None:
        params["gas"] = gas  # no estimate: a call that reverts is sent anyway
    transaction = call.build_transaction(params)
    signed = account.sign_transaction(transaction)
    return bytes(w3.eth.send_raw_transaction(signed.raw_transaction))


def _transact(
    w3: Web3, account: LocalAccount, call: Any, *, gas: int | None = None, require_success: bool = True
) -> Any:
    tx_hash = _send_raw(w3, account, call, gas=gas)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.01)  # type: ignore[arg-type]
    if require_success and receipt["status"] != 1:
        raise AssertionError(f"transaction {tx_hash.hex()} reverted")
    return receipt


# --- one chain per test process -----------------------------------------------------------------------

_shared: OceanChain | None = None
_start_seconds = 0.0


def shared_ocean_chain() -> OceanChain:
    """The test process's anvil with Ocean's contracts, started and deployed on first use and
    stopped when the process exits. Raises LookupError when anvil is not installed."""
    global _shared, _start_seconds
    if _shared is None:
        binary = anvil_binary()
        if binary is None:
            raise LookupError(ANVIL_MISSING)
        if not binary.exists():
            raise LookupError(f"C2D_ANVIL={binary} does not exist; {ANVIL_MISSING}")
        started = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix="c2d-anvil-"))
        node = AnvilNode.start(binary, workdir)
        _start_seconds = time.monotonic() - started
        try:
            _shared = OceanChain.deploy(node)
        except BaseException:
            node.stop()
            raise

        def stop() -> None:
            node.stop()
            shutil.rmtree(workdir, ignore_errors=True)

        atexit.register(stop)
    return _shared


def anvil_start_seconds() -> float:
    return _start_seconds
