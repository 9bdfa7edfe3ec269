"""Reading published results for GetResult, streamed in chunks from an offset."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from c2d_common.errors import FailedPrecondition

CHUNK_BYTES = 1024 * 1024


class LocalResultStore:
    """The local directory store. Only locations under its root are ever opened."""

    def __init__(self, root: Path):
        self.root = root.resolve()

    def _path(self, location: str) -> Path:
        parsed = urlparse(location)
        if parsed.scheme != "file":
            raise FailedPrecondition(f"results stored at {parsed.scheme}:// cannot be read by this provider")
        path = Path(unquote(parsed.path)).resolve()
        if not path.is_relative_to(self.root):
            raise FailedPrecondition("the result is stored outside this provider's result store")
        return path

    async def read(self, location: str, offset: int) -> AsyncIterator[tuple[int, bytes]]:
        path = self._path(location)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise FailedPrecondition("the result file is missing from the result store") from None
        try:
            handle.seek(offset)
            position = offset
            while True:
                chunk = await asyncio.to_thread(handle.read, CHUNK_BYTES)
                if not chunk:
                    return
                yield position, chunk
                position += len(chunk)
        finally:
            handle.close()
