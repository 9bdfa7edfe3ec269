"""Ocean Protocol's v4 contracts as the `ocean-contracts` package ships them: their ABIs, the
factory addresses Ocean deployed per chain, and the `providerFee` struct orders carry.

Shared by the provider (which checks orders, provider_svc.infra.chain) and the CLI (which places
them and creates datatokens, c2d_cli.chain_commands), so that both read the same artifacts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from web3 import Web3

from c2d_common.errors import InvalidArgument

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
# Ocean's startOrder always takes exactly one datatoken (18 decimals) for one order.
ONE_DATATOKEN = 10**18


@cache
def contract_abi(name: str) -> list[dict[str, Any]]:
    """The ABI of one of Ocean's contracts (ERC20Template, ERC721Factory, …)."""
    text = resources.files("artifacts").joinpath(f"{name}.json").read_text()
    return list(json.loads(text)["abi"])


@cache
def _deployments() -> dict[str, dict[str, Any]]:
    text = resources.files("addresses").joinpath("address.json").read_text()
    return dict(json.loads(text))


def deployed_address(chain_id: int, contract: str) -> str | None:
    """Where Ocean deployed `contract` on chain `chain_id`, or None when Ocean lists no deployment
    there (a local chain, or a network Ocean does not serve)."""
    for deployment in _deployments().values():
        if deployment.get("chainId") == chain_id and isinstance(deployment.get(contract), str):
            return Web3.to_checksum_address(deployment[contract])
    return None


@dataclass(frozen=True)
class ProviderFee:
    """Ocean's `providerFee` struct, field by field in the contract's order, as `startOrder` and
    `reuseOrder` take it."""

    provider_fee_address: str
    provider_fee_token: str
    provider_fee_amount: int
    v: int
    r: bytes
    s: bytes
    valid_until: int
    provider_data: bytes

    def as_contract_tuple(
        self,
    ) -> tuple[str, str, int, int, bytes, bytes, int, bytes]:
        return (
            self.provider_fee_address,
            self.provider_fee_token,
            self.provider_fee_amount,
            self.v,
            self.r,
            self.s,
            self.valid_until,
            self.provider_data,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON as Ocean Provider's initialize answers it (the amount a decimal string: it may exceed
        what a JSON number holds exactly)."""
        return {
            "providerFeeAddress": self.provider_fee_address,
            "providerFeeToken": self.provider_fee_token,
            "providerFeeAmount": str(self.provider_fee_amount),
            "v": self.v,
            "r": "0x" + self.r.hex(),
            "s": "0x" + self.s.hex(),
            "validUntil": self.valid_until,
            "providerData": "0x" + self.provider_data.hex(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProviderFee:
        try:
            return cls(
                provider_fee_address=Web3.to_checksum_address(data["providerFeeAddress"]),
                provider_fee_token=Web3.to_checksum_address(data["providerFeeToken"]),
                provider_fee_amount=int(data["providerFeeAmount"]),
                v=int(data["v"]),
                r=bytes.fromhex(str(data["r"]).removeprefix("0x")),
                s=bytes.fromhex(str(data["s"]).removeprefix("0x")),
                valid_until=int(data["validUntil"]),
                provider_data=bytes.fromhex(str(data["providerData"]).removeprefix("0x")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"the provider fee is not one an initialize answer gives: {exc}") from None
