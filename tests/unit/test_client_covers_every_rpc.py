"""The CLI's client wraps every RPC of the provider: a new RPC without a client method fails here."""

from __future__ import annotations

import re

from c2d.provider.v1 import service_pb2
from c2d_cli.client import ProviderClient

# Where the client's name differs from the RPC's snake_case name.
RENAMED = {"list": "list_jobs"}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_every_provider_rpc_has_a_client_method() -> None:
    missing = []
    for service in service_pb2.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            name = snake(method.name)
            if not callable(getattr(ProviderClient, RENAMED.get(name, name), None)):
                missing.append(f"{service.full_name}/{method.name}")
    assert not missing, f"ProviderClient lacks methods for: {missing}"
