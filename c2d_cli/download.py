"""Downloading a job's results to a folder: every file, with one progress bar for all of them,
resumed where an earlier or interrupted download stopped, each checked against its published
size and sha256 before it takes its final name.

A file is written as NAME.part and hashed as it arrives (a resumed file's first part is hashed
from disk once), so nothing is read twice. A stream that breaks (the provider restarting, the
result store briefly away: UNAVAILABLE) is picked up again at the offset reached.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import grpc

from c2d.common.v1 import job_pb2
from c2d_cli.client import ChecksumMismatch, ProviderClient

# Failures a later attempt may get past; anything else (NOT_FOUND, PERMISSION_DENIED, …) is final.
RETRIED = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
ATTEMPTS = 5
HASH_CHUNK = 1024 * 1024
IN_FLIGHT = 16


class UnsafeResultName(Exception):
    pass


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    sha256: str
    resumed_from: int


def destination_of(folder: Path, result: job_pb2.ResultFile) -> Path:
    """folder/outputs/NAME or folder/logs/NAME; a name that would leave the folder is refused."""
    sub = "logs" if result.kind == job_pb2.RESULT_KIND_LOG else "outputs"
    parts = result.name.split("/")
    if (
        not result.name
        or result.name.startswith("/")
        or any(p in ("", ".", "..") or "\0" in p for p in parts)
    ):
        raise UnsafeResultName(
            f"the provider named a result {result.name[:100]!r}, which is not a relative path"
        )
    return folder / sub / Path(*parts)


async def download_result(
    client: ProviderClient,
    job_id: str,
    result: job_pb2.ResultFile,
    destination: Path,
    on_bytes: Callable[[int], None] | None = None,
    attempts: int = ATTEMPTS,
) -> Downloaded:
    """One result to destination, resuming destination.part if it is there."""
    partial = destination.with_name(destination.name + ".part")
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    offset = 0
    if partial.exists():
        if partial.stat().st_size > result.size:
            partial.unlink()
        else:
            with partial.open("rb") as reader:
                for block in iter(lambda: reader.read(HASH_CHUNK), b""):
                    digest.update(block)
                    offset += len(block)
    resumed_from = offset
    if on_bytes and offset:
        on_bytes(offset)
    loop = asyncio.get_running_loop()
    # Writing and hashing each happen in a thread of their own, in order, beside each other and
    # beside the receiving of the next pieces (all three release the GIL): hashing a GiB alone
    # takes about as long as receiving it, so one thread doing both was the download's pace. At
    # most a few pieces wait, so memory stays flat.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="download-write")
    hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="download-hash")
    pending: deque[asyncio.Future[tuple[int, None]]] = deque()
    with partial.open("ab") as sink:

        def keep(data: bytes | memoryview) -> asyncio.Future[tuple[int, None]]:
            return asyncio.gather(
                loop.run_in_executor(writer, sink.write, data),
                loop.run_in_executor(hasher, digest.update, data),
            )

        try:
            for attempt in range(attempts):
                try:
                    async for response in client.get_result(job_id, result.name, result.kind, offset):
                        if response.offset != offset:
                            raise ChecksumMismatch(
                                f"{result.name}: the provider sent offset {response.offset}, not {offset}"
                            )
                        if response.data:
                            pending.append(keep(response.data))
                            offset += len(response.data)
                            if on_bytes:
                                on_bytes(len(response.data))
                            if len(pending) > IN_FLIGHT:
                                await pending.popleft()
                    break
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in RETRIED or attempt == attempts - 1:
                        raise
                    await asyncio.sleep(min(0.5 * 2**attempt, 5.0))
        finally:
            while pending:
                await pending.popleft()
            writer.shutdown()
            hasher.shutdown()
    if offset != result.size or digest.hexdigest() != result.sha256:
        partial.unlink()
        raise ChecksumMismatch(
            f"{result.name}: got {offset} bytes with sha256 {digest.hexdigest()}, "
            f"not the published {result.size} bytes with sha256 {result.sha256}"
        )
    partial.replace(destination)
    return Downloaded(destination, offset, result.sha256, resumed_from)


class ProgressBar:
    """One line on a terminal: bytes done of all files, speed, file count, the current file."""

    def __init__(
        self, total_bytes: int, total_files: int, stream: TextIO = sys.stderr, enabled: bool | None = None
    ):
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.done_bytes = 0
        self.done_files = 0
        self.current = ""
        self.started = time.monotonic()
        self._shown = 0.0

    def start_file(self, name: str) -> None:
        self.current = name
        self._show(force=True)

    def advance(self, count: int) -> None:
        self.done_bytes += count
        self._show()

    def end_file(self) -> None:
        self.done_files += 1
        self._show(force=True)

    def clear(self) -> None:
        """Takes the bar off its line, so that a message can be printed there."""
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + self.line() + "\x1b[K\n")
            self.stream.flush()

    def line(self, width: int = 24) -> str:
        fraction = self.done_bytes / self.total_bytes if self.total_bytes else 1.0
        filled = min(width, int(fraction * width))
        elapsed = max(time.monotonic() - self.started, 1e-6)
        speed = self.done_bytes / elapsed / 2**20
        return (
            f"[{'#' * filled}{'.' * (width - filled)}] {100 * fraction:5.1f}%  "
            f"{_mib(self.done_bytes)}/{_mib(self.total_bytes)} MiB  {speed:6.1f} MiB/s  "
            f"{self.done_files}/{self.total_files} files  {self.current[-40:]}"
        )

    def _show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._shown < 0.1):
            return
        self._shown = now
        self.stream.write("\r" + self.line() + "\x1b[K")
        self.stream.flush()


def _mib(count: int) -> str:
    return f"{count / 2**20:.1f}"


async def download_all(
    client: ProviderClient,
    job: job_pb2.Job,
    folder: Path,
    progress: ProgressBar | None = None,
    report: Callable[[str], None] | None = None,
) -> list[Downloaded]:
    """Every result of the job under folder/outputs and folder/logs. report gets a line per file."""
    results = list(job.results)
    destinations = [destination_of(folder, r) for r in results]  # all checked before any is written
    bar = progress or ProgressBar(sum(r.size for r in results), len(results))
    done: list[Downloaded] = []
    try:
        for result, destination in zip(results, destinations, strict=True):
            bar.start_file(result.name)
            downloaded = await download_result(client, job.job_id, result, destination, bar.advance)
            bar.end_file()
            done.append(downloaded)
            if report:
                resumed = f" (resumed at {downloaded.resumed_from} B)" if downloaded.resumed_from else ""
                bar.clear()
                report(f"  {destination}  {downloaded.size} B  sha256 verified{resumed}")
    finally:
        bar.close()
    return done
