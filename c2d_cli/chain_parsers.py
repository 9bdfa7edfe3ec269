"""The command lines of c2d's chain commands (c2d_cli.chain_commands), apart from them: those import
web3 and eth_account, about a second and a half of start-up that every other c2d command would
otherwise pay."""

from __future__ import annotations

import argparse
import os
from typing import Any

# Commands that talk to the chain only, not to the provider.
WITHOUT_PROVIDER = frozenset({"create-datatoken", "mint-datatokens"})


def _rpc_url_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--rpc-url",
        default=os.environ.get("C2D_CHAIN_RPC_URL"),
        help="JSON-RPC URL of the chain node (env C2D_CHAIN_RPC_URL)",
    )


def add_parsers(sub: Any) -> None:
    create = sub.add_parser(
        "create-datatoken",
        help="publisher: create a data NFT and its datatoken with Ocean's ERC721Factory; prints the "
        "datatoken's address (for c2d publish --datatoken)",
    )
    create.add_argument("--name", required=True, help="the data NFT's name (the datatoken's too)")
    create.add_argument("--symbol", default="", help="the NFT's symbol (default: from the name)")
    create.add_argument("--token-uri", default="", help="the data NFT's metadata URI")
    create.add_argument(
        "--factory",
        default=os.environ.get("C2D_ERC721_FACTORY"),
        help="Ocean's ERC721Factory (env C2D_ERC721_FACTORY; default: Ocean's deployment on the chain)",
    )
    create.add_argument("--mint", default="", metavar="AMOUNT", help="also mint this many datatokens")
    create.add_argument("--to", default="", metavar="ADDRESS", help="whom --mint mints to (default: you)")
    _rpc_url_option(create)

    mint = sub.add_parser("mint-datatokens", help="publisher: mint datatokens to an address (a consumer)")
    mint.add_argument("datatoken", metavar="DATATOKEN")
    mint.add_argument("--to", required=True, metavar="ADDRESS")
    mint.add_argument("--amount", default="1", help="datatokens (default 1: one order)")
    _rpc_url_option(mint)

    order = sub.add_parser(
        "order",
        help="consumer: order datasets on chain (startOrder with the provider's fee); prints "
        "DID=0xTX for c2d start --order",
    )
    order.add_argument("--dataset", action="append", required=True, metavar="DID")
    order.add_argument("--algorithm", default="", metavar="DID", help="an algorithm asset with a datatoken")
    order.add_argument("--env", default="", help="the paid compute environment (see c2d envs)")
    _rpc_url_option(order)
