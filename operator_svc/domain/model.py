"""What an engine reports, as the operator's domain sees it (free of gRPC)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from operator_svc.infra.job_store import NewResult


@dataclass(frozen=True)
class StatusUpdate:
    status: int
    status_text: str
    exit_code: int | None = None
    out_of_memory: bool = False
    results: list[NewResult] = field(default_factory=list)


@dataclass(frozen=True)
class LogPiece:
    stream: int
    data: bytes


class StopAnswer(Enum):
    # The engine stopped the job's run; STOPPED follows on its RunJob stream.
    STOPPED = "stopped"
    # The engine had already ended the job; its terminal status follows on the RunJob stream.
    ALREADY_ENDED = "already ended"
    # The engine has no run of the job (still queued here) and will refuse to start it.
    NOT_RUNNING = "not running"


class EngineUnavailable(Exception):
    """The engine could not be reached, or its stream broke; the run may be re-attached."""


class EngineGateway(Protocol):
    def run_job(self, job_id: str, owner: str, spec: bytes) -> AsyncIterator[StatusUpdate | LogPiece]: ...

    async def stop_job(self, job_id: str) -> StopAnswer: ...

    async def environments(self) -> list[Any]: ...
