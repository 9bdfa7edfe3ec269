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
    # Where it stands in the engine's run of the job (see ProgressCursor); none for updates the
    # operator makes itself.
    cursor: ProgressCursor | None = None


@dataclass(frozen=True)
class LogPiece:
    stream: int
    data: bytes
    cursor: ProgressCursor | None = None


@dataclass(frozen=True)
class ProgressCursor:
    """A position in an engine's run of a job: the run's id and the index of a status change or
    log piece in it. Stored with what it brought, so that a re-attach asks for what follows."""

    run_id: str = ""
    position: int = 0


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
    def run_job(
        self, job_id: str, owner: str, spec: bytes, after: ProgressCursor
    ) -> AsyncIterator[StatusUpdate | LogPiece]: ...

    async def stop_job(self, job_id: str) -> StopAnswer: ...

    async def environments(self) -> list[Any]: ...
