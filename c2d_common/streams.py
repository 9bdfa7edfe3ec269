"""Ending server streams cleanly when a service shuts down."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TypeVar

T = TypeVar("T")


async def until(stop: asyncio.Event, source: AsyncIterator[T]) -> AsyncIterator[T]:
    """The items of source until it ends or stop is set, whichever comes first. A Watch or a log
    stream ended this way ends normally for its client, which resumes elsewhere with the sequence
    number it saw last, instead of waiting out the server's grace period and being cancelled."""
    stopper = asyncio.ensure_future(stop.wait())
    step: asyncio.Future[Any] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(source))
            await asyncio.wait({step, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                return  # stopping: the finally below ends the pending step
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            step = None
            yield item
    finally:
        stopper.cancel()
        if step is not None:
            # The source is inside a step (we are stopping, or being cancelled): end the step,
            # which ends the generator too, before anything else touches it.
            step.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
                await step
        elif isinstance(source, AsyncGenerator):
            await source.aclose()
