"""Several engines sharing the work. Each job is given to one engine, once, and the choice is
stored with the job: whoever drives the job later (this operator after a restart included) asks
that engine, which attaches to its run instead of starting another. So no job runs twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from operator_svc.domain.model import EngineGateway


class EngineSet:
    def __init__(self, gateways: dict[str, EngineGateway]):
        if not gateways:
            raise ValueError("at least one engine is needed")
        self.gateways = gateways

    @property
    def addresses(self) -> list[str]:
        return list(self.gateways)

    def get(self, address: str) -> EngineGateway | None:
        return self.gateways.get(address)

    def pick(self, assigned: Iterable[str]) -> str:
        """The engine with the fewest jobs being driven now (the first on a tie)."""
        load = Counter(assigned)
        return min(self.gateways, key=lambda address: load[address])
