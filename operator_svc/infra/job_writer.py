"""The operator's writes, on one thread of their own, many per transaction (group commit).

Every status change and log piece of every job is a write. One transaction each cost the operator
most of its CPU per job (and PostgreSQL a commit each); here the writes that arrive while a
transaction runs wait for the next one, which carries them all, in the order they were submitted.
A write waits for its own commit before its caller goes on, so nothing is ever published that is
not durable.

A write that fails (the database away, a constraint) fails its whole batch; each write of that
batch is then tried again alone, so that one bad write never fails the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

import structlog
from sqlalchemy.engine import Connection, Engine

from c2d_common.errors import Unavailable

log = structlog.get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

MAX_BATCH = 256


@dataclass
class _Write:
    work: Callable[[Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


class WriterClosed(Unavailable):
    pass


class JobWriter:
    def __init__(self, engine: Engine, max_batch: int = MAX_BATCH):
        self.engine = engine
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="job-writer", daemon=True)
        self._thread.start()

    async def run(
        self, work: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """work(connection, *args, **kwargs) inside the next transaction; its answer once committed."""
        if self._closed:
            raise WriterClosed("the operator is shutting down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Write(lambda connection: work(connection, *args, **kwargs), future, loop))
        return await future

    def close(self) -> None:
        """Writes what is queued, then stops the thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()

    # --- the writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._deliver(batch, self._execute(batch))
            if stop:
                return

    def _execute(self, batch: list[_Write]) -> list[tuple[bool, Any]]:
        try:
            with self.engine.begin() as connection:
                answers = [(True, write.work(connection)) for write in batch]
            return answers
        except Exception as exc:
            if len(batch) == 1:
                return [(False, exc)]
            log.warning("a batch of job writes failed; writing each alone", size=len(batch), error=repr(exc))
        answers = []
        for write in batch:
            try:
                with self.engine.begin() as connection:
                    answers.append((True, write.work(connection)))
            except Exception as exc:
                answers.append((False, exc))
        return answers

    @staticmethod
    def _deliver(batch: list[_Write], answers: list[tuple[bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for write, (ok, value) in zip(batch, answers, strict=True):
            by_loop.setdefault(write.loop, []).append((write.future, ok, value))
        for loop, outcomes in by_loop.items():
            # One wake-up of the event loop per batch, not one per write.
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, outcomes)


def _settle(outcomes: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in outcomes:
        if future.done():  # the caller was cancelled; the write stands
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
